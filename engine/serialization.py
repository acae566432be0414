"""The one way model files and checkpoints are written and read: JSON configs and safetensors.

Nothing here ever unpickles. A safetensors file is an 8-byte little-endian header length, a JSON
header (tensor name -> dtype, shape, byte offsets) and raw tensor bytes. Its header is checked
here *before* the safetensors library sees the file, so that a file from anywhere (a pickle or a
``torch.save`` zip renamed to ``model.safetensors``, a truncated download, an edited header) is
rejected with a :class:`ModelFileError` naming the file and the problem, never executed.

Writes are atomic: data goes to a temporary file in the same folder, is flushed to disk and then
renamed over the target, so a reader sees either the old file or the complete new one.
:func:`atomic_directory` does the same for a whole folder (a model or a checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

# 2: configs may hold keys a reader of 1 would ignore and then predict differently (flair
# embeddings' "tokenized", transformer_document's "cls_pooling"): such a reader refuses a 2.
FORMAT_VERSION = 2
MODEL_FILE_FORMAT = "tagsmith-model"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# A JSON config or a safetensors header larger than this is not one we wrote.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPE_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class ModelFileError(ValueError):
    """A model file (config or weights) is missing, malformed, tampered with or does not fit the
    model it is loaded into. ``path`` names the file, ``reason`` what is wrong."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def library_versions() -> dict[str, str]:
    """Versions recorded in model files (for diagnosing a model that behaves differently later)."""
    import safetensors

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
    }
    try:
        from importlib.metadata import version

        versions["tagsmith"] = version("tagsmith")
    except Exception:  # not installed as a distribution (running from a checkout)
        versions["tagsmith"] = "unknown"
    return versions


# atomic writes --------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``path`` holds the old bytes or the new ones, never a part (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as pretty JSON, atomically. Raises TypeError for non-JSON values."""
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(Path(path), (text + "\n").encode("utf-8"))


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`; anything else is a ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ModelFileError(path, f"{size} bytes is too large for a config file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(path, f"not valid UTF-8 JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelFileError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write tensors as safetensors, atomically. Tensors sharing memory (tied weights) are copied
    so that each name has its own bytes, which the format requires."""
    from safetensors.torch import save

    seen: set[tuple[int, Any]] = set()  # Any: storage_offset() is typed int | SymInt
    prepared: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(tensor).__name__}")
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and key in seen:
            tensor = tensor.clone()
        seen.add(key)
        prepared[name] = tensor
    atomic_write_bytes(Path(path), save(prepared, metadata=dict(metadata) if metadata else None))


def check_safetensors_header(path: str | Path) -> dict[str, Any]:
    """Validate the structure of a safetensors file without loading it; returns its header.

    Checks: the header length fits the file, the header is a JSON object, every entry has a known
    dtype, a shape of non-negative integers and byte offsets that match dtype x shape, entries
    tile the data section exactly (no gaps, overlaps or trailing bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelFileError(path, f"truncated: {size} bytes is too short for a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise ModelFileError(
                path,
                f"not a safetensors file (header length {header_len} does not fit a {size}-byte file; "
                "a pickle or torch.save file renamed to .safetensors looks like this)",
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(path, f"safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "safetensors header is not a JSON object")
    data_size = size - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ModelFileError(path, "safetensors __metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(path, f"tensor {name!r}: malformed header entry {entry!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_SIZES:
            raise ModelFileError(path, f"tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ModelFileError(path, f"tensor {name!r}: invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise ModelFileError(
                path, f"tensor {name!r}: byte offsets {offsets!r} outside the {data_size}-byte data"
            )
        expected = math.prod(shape) * _DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != expected:
            raise ModelFileError(
                path,
                f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for {dtype} {shape} (expected {expected})",
            )
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ModelFileError(path, f"tensor {name!r}: data does not start where the previous tensor ends")
        position = end
    if position != data_size:
        raise ModelFileError(
            path, f"truncated or padded: the header describes {position} data bytes, the file has {data_size}"
        )
    return header


def load_tensors(path: str | Path, require_finite: bool = False) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU after :func:`check_safetensors_header`.
    ``require_finite`` (an untrusted model): refuse NaN and infinite weights, with which a model
    predicts nothing useful, and whose NaN confidences are no JSON number."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(path, f"cannot read tensors ({error})") from None
    if require_finite:
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelFileError(
                    path, f"tensor {name!r} holds NaN or infinite values (saved from a run that diverged?)"
                )
    return tensors


_TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def header_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors as shapes and dtypes only (meta tensors, nothing read or allocated)."""
    header = check_safetensors_header(path)
    return {
        name: torch.empty(entry["shape"], dtype=_TORCH_DTYPES[entry["dtype"]], device="meta")
        for name, entry in header.items()
        if name != "__metadata__"
    }


def check_state_dict(
    path: str | Path, expected: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]
) -> None:
    """Loaded tensors must match the model's state dict exactly: names, shapes and dtypes."""
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise ModelFileError(path, "does not fit the model described by the config: " + "; ".join(parts))
    for name, tensor in expected.items():
        other = loaded[name]
        if tuple(other.shape) != tuple(tensor.shape):
            raise ModelFileError(
                path, f"tensor {name!r} has shape {tuple(other.shape)}, the model needs {tuple(tensor.shape)}"
            )
        if other.dtype != tensor.dtype:
            raise ModelFileError(
                path, f"tensor {name!r} has dtype {other.dtype}, the model needs {tensor.dtype}"
            )


# folders --------------------------------------------------------------------------------------
@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder next to ``directory``; on success it replaces ``directory``
    (an existing one is moved aside first and then deleted), on error it is removed."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
