"""Embedding interfaces and the storage-mode mechanism shared by all embeddings.

Contract (every embedding is an ``nn.Module``):
- ``embedding_length``: output width.
- ``embed(sentences)``: token embeddings -> padded float tensor ``[batch, max_len, embedding_length]``
  (zeros past each sentence's length); document embeddings -> ``[batch, embedding_length]``.
  Output lives on the module's device.
- ``is_static``: the output is a pure function of the text (no gradient flows into it), so it
  may be computed once and kept on the sentence (``Sentence.embeddings[self.name]``) when the
  storage mode is ``cpu`` or ``gpu``. Embeddings that need gradients are never kept.
- ``to_config()`` -> JSON-able dict with a ``"type"`` key; ``engine.embeddings.from_config``
  rebuilds the module (weights come from the model's safetensors). ``save_resources(dir)`` writes
  extra files a model folder needs (tokenizer, vocabulary); ``from_config(config, resource_dir)``
  reads them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from engine.data import Sentence

StorageMode = Literal["none", "cpu", "gpu"]


class Embeddings(nn.Module):
    embedding_type: str = ""  # registry key, also the config "type"

    def __init__(self) -> None:
        super().__init__()
        self.name: str = self.embedding_type
        self.storage_mode: StorageMode = "none"

    @property
    def embedding_length(self) -> int:
        raise NotImplementedError

    @property
    def is_static(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def save_resources(self, directory: Path) -> None:
        """Write files (beyond tensors) that ``from_config`` needs. Default: none."""

    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor] | torch.Tensor:
        """Compute embeddings: a list of per-sentence tensors ([len, D] or [D]) or a stacked
        tensor ([B, T, D] / [B, D])."""
        raise NotImplementedError


class TokenEmbeddings(Embeddings):
    def embed(self, sentences: list[Sentence]) -> torch.Tensor:
        per_sentence = _with_storage(self, sentences)
        if isinstance(per_sentence, torch.Tensor):
            return per_sentence
        return pad_sequence(per_sentence, batch_first=True)


class DocumentEmbeddings(Embeddings):
    def embed(self, sentences: list[Sentence]) -> torch.Tensor:
        per_sentence = _with_storage(self, sentences)
        if isinstance(per_sentence, torch.Tensor):
            return per_sentence
        return torch.stack(per_sentence)


def _with_storage(module: Embeddings, sentences: list[Sentence]) -> list[torch.Tensor] | torch.Tensor:
    """Serve kept embeddings from the sentences and compute only the missing ones."""
    keep = module.is_static and module.storage_mode != "none"
    if not keep:
        return module._embed(sentences)
    device = module.device
    missing = [s for s in sentences if module.name not in s.embeddings]
    if missing:
        computed = module._embed(missing)
        if isinstance(computed, torch.Tensor):
            computed = [
                computed[i, : len(s)] if computed.dim() == 3 else computed[i] for i, s in enumerate(missing)
            ]
        target = device if module.storage_mode == "gpu" else torch.device("cpu")
        for sentence, tensor in zip(missing, computed, strict=True):
            sentence.embeddings[module.name] = tensor.detach().to(target)
    return [s.embeddings[module.name].to(device, non_blocking=True) for s in sentences]


def set_storage_mode(module: nn.Module, mode: StorageMode) -> None:
    """Set the storage mode on every embedding inside ``module``."""
    for sub in module.modules():
        if isinstance(sub, Embeddings):
            sub.storage_mode = mode


def clear_stored_embeddings(sentences: list[Sentence], mode: StorageMode) -> None:
    """After a batch: with mode ``none`` nothing is kept on the sentences."""
    if mode == "none":
        for sentence in sentences:
            sentence.embeddings.clear()
