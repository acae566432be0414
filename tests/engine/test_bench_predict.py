"""bench/predict.py --quick runs and prints one JSON line with the promised fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_bench_predict_quick(shared_data: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "predict.py"), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["sentences"] == 256
    assert record["seconds"] > 0
    assert abs(record["sentences_per_s"] * record["seconds"] - 256) < 2
    assert record["tokens"] > 256
