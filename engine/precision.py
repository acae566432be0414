"""Reduced precision: bfloat16 autocast for inference, and the mixed-precision type of training,
where the hardware computes it natively.

On a CPU with native bfloat16 (AVX512-BF16 or AMX) PyTorch runs the LSTM and linear layers in
bfloat16 at several times the float32 speed; without it bfloat16 is emulated and slower, so
``auto`` chooses it only where it is native. Scores stay float32 (the CRF casts them), and tags
agree with float32 almost everywhere (``bench/predict.py --precision`` measures agreement).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("float32", "bfloat16", "auto")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


@lru_cache(maxsize=1)
def _native_bfloat16_cpu() -> bool:
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: no way to tell, so no
        return False
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def native_bfloat16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and _native_bfloat16_cpu()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``float32`` or ``bfloat16`` for a requested precision (``auto``: bfloat16 if native)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


def inference_autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    if resolve_precision(precision, device) == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast type of mixed-precision training (``use_amp``) on a device, or None where it
    would not pay: float16 (with loss scaling) on CUDA, bfloat16 on a CPU that computes it
    natively; an emulated bfloat16 CPU trains slower than in float32."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bfloat16(device) else None
