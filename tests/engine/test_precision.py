"""Choosing predict's arithmetic: ``auto`` takes bfloat16 only where the CPU computes it natively."""

from __future__ import annotations

import pytest
import torch

from engine import precision
from engine.precision import cpu_flags, resolve_precision

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    assert {"avx2", "avx512_bf16"} <= cpu_flags(CPUINFO)
    assert cpu_flags("processor : 0\n") == set()


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bfloat16_only_where_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision, "_native_bfloat16_cpu", lambda: native)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bfloat16" if native else "float32")
    # an explicit choice is taken as it is
    assert resolve_precision("bfloat16", cpu) == "bfloat16"
    assert resolve_precision("float32", cpu) == "float32"


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="float32, bfloat16 or auto|one of"):
        resolve_precision("fp8", torch.device("cpu"))
