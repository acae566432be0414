"""Embedding interfaces, the config registry and the storage-mode mechanism shared by all embeddings.

Contract (every embedding is an ``nn.Module``):
- ``embedding_length``: output width.
- ``embed(sentences)``: token embeddings -> padded float tensor ``[batch, max_len, embedding_length]``
  (zeros past each sentence's length); document embeddings -> ``[batch, embedding_length]``.
  Output lives on the module's device.
- ``is_static``: the output is a pure function of the text (no gradient flows into it), so it
  may be computed once and kept on the sentence (``Sentence.embeddings[self.storage_key]``) when
  the storage mode is ``cpu`` or ``gpu``. Embeddings that need gradients are never kept.
- ``to_config()`` -> JSON-able dict with a ``"type"`` key; ``engine.embeddings.embeddings_from_config``
  rebuilds the module (weights come from the model's safetensors). ``save_resources(dir)`` writes
  extra files a model folder needs (tokenizer, vocabulary) into ``resource_subdir(dir)``;
  ``from_config(config, resource_dir)`` reads them back.

Extending: decorate a subclass with ``@register_embedding("my_type")`` and implement
``from_config``; ``embeddings_from_config({"type": "my_type", ...}, dir)`` then finds it.
"""

from __future__ import annotations

import abc
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from engine.data import Sentence, sentence_list

StorageMode = Literal["none", "cpu", "gpu"]
STORAGE_MODES: tuple[str, ...] = ("none", "cpu", "gpu")


class EmbeddingConfigError(ValueError):
    """An embedding config (or constructor argument) is invalid; the message names the field."""


class Embeddings(nn.Module, abc.ABC):
    embedding_type: str = ""  # registry key, also the config "type"
    # Config keys older versions wrote and ``from_config`` still reads; any other key that
    # ``to_config`` does not write is refused (a misspelt option would otherwise be ignored).
    legacy_config_keys: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.name: str = self.embedding_type
        self.storage_mode: StorageMode = "none"
        self._instance = uuid.uuid4().hex[:12]

    @property
    def storage_key(self) -> str:
        """The key of this embedding's kept vectors on a sentence. Names are not enough: every
        GloVe table is "word:glove" whatever words it kept, and two language models can both be
        "flair:forward", so two models predicting on the same sentences would read each other's
        vectors (silently wrong, or an IndexError)."""
        return f"{self.name}#{self._instance}"

    @property
    @abc.abstractmethod
    def embedding_length(self) -> int:
        """Width of one output vector."""

    @property
    def is_static(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-able description with ``"type"``; enough (with the resources) to rebuild."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> Embeddings:
        """Rebuild from ``to_config()``'s output (weights are loaded afterwards by the caller)."""

    def save_resources(self, directory: Path) -> None:
        """Write files (beyond tensors) that ``from_config`` needs. Default: none."""

    def resource_subdir(self, directory: Path) -> Path:
        """This embedding's own folder inside a model's resource directory (``StackedEmbeddings``
        refuses two names of one folder, so stacked embeddings never overwrite each other's
        files)."""
        return resource_folder(directory, self.name)

    @abc.abstractmethod
    def embed(self, sentences: list[Sentence] | Sentence) -> torch.Tensor:
        """One padded tensor for the batch (a single Sentence: a batch of one): ``[B, T, D]``
        (token embeddings) or ``[B, D]`` (document embeddings), stored embeddings served from the
        sentences. Nothing is written onto the tokens."""

    @abc.abstractmethod
    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor] | torch.Tensor:
        """Compute embeddings: a list of per-sentence tensors ([len, D] or [D]) or a stacked
        tensor ([B, T, D] / [B, D])."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}, length={self.embedding_length}, static={self.is_static}"


class TokenEmbeddings(Embeddings):
    def embed(self, sentences: list[Sentence] | Sentence) -> torch.Tensor:
        per_sentence = _with_storage(self, sentence_list(sentences, "embed"))
        if isinstance(per_sentence, torch.Tensor):
            return per_sentence
        return pad_sequence(per_sentence, batch_first=True)


class DocumentEmbeddings(Embeddings):
    def embed(self, sentences: list[Sentence] | Sentence) -> torch.Tensor:
        per_sentence = _with_storage(self, sentence_list(sentences, "embed"))
        if isinstance(per_sentence, torch.Tensor):
            return per_sentence
        return torch.stack(per_sentence)


def _with_storage(module: Embeddings, sentences: list[Sentence]) -> list[torch.Tensor] | torch.Tensor:
    """Serve kept embeddings from the sentences and compute only the missing ones."""
    keep = module.is_static and module.storage_mode != "none"
    if not keep:
        return module._embed(sentences)
    device = module.device
    key = module.storage_key
    missing = [s for s in sentences if key not in s.embeddings]
    if missing:
        computed = module._embed(missing)
        if isinstance(computed, torch.Tensor):
            computed = [
                computed[i, : len(s)] if computed.dim() == 3 else computed[i] for i, s in enumerate(missing)
            ]
        target = device if module.storage_mode == "gpu" else torch.device("cpu")
        for sentence, tensor in zip(missing, computed, strict=True):
            sentence.embeddings[key] = tensor.detach().to(target)
    return [s.embeddings[key].to(device, non_blocking=True) for s in sentences]


def set_storage_mode(module: nn.Module, mode: StorageMode) -> None:
    """Set the storage mode on every embedding inside ``module``."""
    if mode not in STORAGE_MODES:
        raise ValueError(f"embeddings storage mode must be one of {STORAGE_MODES}, got {mode!r}")
    for sub in module.modules():
        if isinstance(sub, Embeddings):
            sub.storage_mode = mode


def clear_stored_embeddings(sentences: list[Sentence], mode: StorageMode) -> None:
    """After a batch: with mode ``none`` nothing is kept on the sentences."""
    if mode == "none":
        for sentence in sentences:
            sentence.embeddings.clear()


# registry -------------------------------------------------------------------------------------
EMBEDDING_TYPES: dict[str, type[Embeddings]] = {}

E = TypeVar("E", bound=type[Embeddings])


def register_embedding(type_name: str, *aliases: str) -> Callable[[E], E]:
    """Class decorator: make ``cls`` buildable by ``embeddings_from_config`` under ``type_name``
    (which becomes ``cls.embedding_type``, the config's ``"type"``) and any ``aliases``."""

    def decorate(cls: E) -> E:
        for key in (type_name, *aliases):
            existing = EMBEDDING_TYPES.get(key)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"embedding type {key!r} is already registered by {existing.__qualname__}")
        cls.embedding_type = type_name
        for key in (type_name, *aliases):
            EMBEDDING_TYPES[key] = cls
        return cls

    return decorate


def resource_folder(directory: Path, name: str) -> Path:
    """The folder for the resources of the embedding called ``name``."""
    return Path(directory) / resource_folder_name(name)


def resource_folder_name(name: str) -> str:
    """A file-system-safe folder name for ``name``. Distinct names can share one (``word:a b``,
    ``word:a_b``); saved models keep the folders this names, so it cannot change."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def sanitize_name(text: str) -> str:
    """A short, readable name part derived from a path or model name."""
    path = Path(str(text).rstrip("/\\"))
    return path.name or str(text)
