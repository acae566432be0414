"""Limits on what a model may ask of the machine that loads and serves it, defined in one place.

A model imported from an upload (``POST /models``) is untrusted input: its config alone could
describe a model whose building, loading or prediction takes any amount of memory or time. The
loaders (``engine.models.load_model(..., untrusted=True)``, ``LanguageModel.load(...,
untrusted=True)``) check an untrusted folder against these limits *before* anything is built
for real; the service applies the same numbers where a model is asked for (job submission: a
corpus may hold a label type with more values, such as lemmas, that no job trains on), so that a
model trained here can be imported elsewhere.

- ``MAX_LABELS``: labels a model may predict: a classifier's classes, a token tagger's tags, a
  span tagger's span types (``O`` not counted).
- ``MAX_CRF_TAGS``: tags of a CRF (``O`` included). Viterbi decoding costs tags x tags per token:
  a 1,201-tag CRF took 9 s and about 1 GB for 32 sentences of 25 tokens, 512 tags about 1.5 s.
  A span tagger has 4 tags per label with BIOES (B-, I-, E-, S-) and 2 with BIO, plus ``O``: a
  BIOES CRF tagger may have at most 127 span labels, a BIO one 255.
- ``MAX_RESOURCE_FILE_BYTES``: any file of a model folder other than ``model.safetensors``
  (configs, word lists, tokenizer files): they are parsed into Python objects, which take about
  ten times their size in memory.
- ``MAX_UNBACKED_TENSOR_BYTES`` (+ ``UNBACKED_TENSOR_FRACTION`` of the weights): tensors the
  config creates that ``model.safetensors`` does not hold (non-persistent buffers, such as a
  transformer's causal attention mask of positions x positions per layer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from engine.serialization import ModelFileError, check_state_dict, header_tensors

MAX_LABELS = 1000
MAX_CRF_TAGS = 512
MAX_RESOURCE_FILE_BYTES = 32 * 1024 * 1024
MAX_UNBACKED_TENSOR_BYTES = 32 * 1024 * 1024
UNBACKED_TENSOR_FRACTION = 0.125

_MB = 1024 * 1024
_TAGS_PER_SPAN_LABEL = {"BIOES": 4, "BIO": 2}

M = TypeVar("M", bound=nn.Module)


def tagger_tags(labels: int, label_kind: str, tag_format: str = "BIOES") -> int:
    """The tags (``O`` included) a sequence tagger predicts for ``labels`` labels (``O`` not
    counted) of ``label_kind`` ``"span"`` or ``"token"``."""
    if label_kind == "span":
        return _TAGS_PER_SPAN_LABEL[tag_format.upper()] * labels + 1
    return labels + 1


def label_count_error(
    labels: int, label_kind: str | None = None, tag_format: str = "BIOES", use_crf: bool = False
) -> str | None:
    """Why ``labels`` labels are too many for a model (``None`` when they are not): more than
    ``MAX_LABELS``, or, for a tagger with a CRF (``label_kind`` ``"span"`` or ``"token"``), more
    CRF tags than ``MAX_CRF_TAGS``."""
    if labels > MAX_LABELS:
        return f"{labels} labels; a model may have at most {MAX_LABELS}"
    if use_crf and label_kind in ("span", "token"):
        tags = tagger_tags(labels, label_kind, tag_format)
        if tags > MAX_CRF_TAGS:
            return (
                f"{labels} {label_kind} labels make {tags} CRF tags; a CRF may have at most {MAX_CRF_TAGS} "
                "(its prediction cost grows with the square of its tags: "
                f"at most {max_crf_labels(label_kind, tag_format)} {label_kind} labels with {tag_format.upper()})"
            )
    return None


def max_crf_labels(label_kind: str, tag_format: str = "BIOES") -> int:
    """The most labels a tagger with a CRF may have (``MAX_CRF_TAGS``, ``O`` not counted)."""
    if label_kind == "span":
        return (MAX_CRF_TAGS - 1) // _TAGS_PER_SPAN_LABEL[tag_format.upper()]
    return MAX_CRF_TAGS - 1


def unbacked_allowance(weights_bytes: int) -> int:
    """Bytes of tensors a config may create beyond the ``weights_bytes`` its weights file holds."""
    return MAX_UNBACKED_TENSOR_BYTES + int(weights_bytes * UNBACKED_TENSOR_FRACTION)


def tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` (non-persistent buffers too), each tensor once."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            tensors[name] = tensor
    return tensors


def check_built_on_meta(build: Callable[[], M], config_path: Path, weights_path: Path) -> M:
    """Build an untrusted model with ``build`` on PyTorch's meta device (which allocates
    nothing) and check it against the weights file's header: the same tensor names, shapes and
    dtypes, and no more tensor memory than the file provides plus ``unbacked_allowance``.
    Returns the meta model (for further checks); raises ``ModelFileError``."""
    try:
        with torch.device("meta"):
            module = build()
    except (RuntimeError, OverflowError, MemoryError) as error:  # sizes past what torch can address
        raise ModelFileError(config_path, f"describes a model that cannot be built: {error}") from error
    header = header_tensors(weights_path)
    check_state_dict(weights_path, module.state_dict(), header)
    provided = tensor_bytes(header)
    built = module_tensors(module)
    total = tensor_bytes(built)
    allowed = provided + unbacked_allowance(provided)
    if total > allowed:
        saved = set(module.state_dict())
        unbacked = sorted(
            ((n, t) for n, t in built.items() if n not in saved),
            key=lambda item: -item[1].numel() * item[1].element_size(),
        )
        largest = ", ".join(
            f"{name!r} {tuple(t.shape)} {t.numel() * t.element_size() / _MB:.0f} MB"
            for name, t in unbacked[:3]
        )
        raise ModelFileError(
            config_path,
            f"describes a model of {total / _MB:.0f} MB of tensors, but {weights_path.name} holds "
            f"{provided / _MB:.0f} MB: the config alone may add at most {unbacked_allowance(provided) / _MB:.0f} MB "
            f"(tensors it creates that are not in {weights_path.name}: {largest or 'none'}); "
            "check the sizes in the config (a transformer's max_position_embeddings or n_positions)",
        )
    return module
