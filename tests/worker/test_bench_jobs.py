"""``bench/jobs.py --quick`` runs and prints its one JSON line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_jobs_quick_prints_latency_and_overhead() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "jobs.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert 0 < report["submit_to_first_batch_s"] < 60
    assert math.isfinite(report["callback_overhead_pct"])
    assert 0 < report["callback_time_pct"] < 100
    assert report["train_s_without_callback"] > 0 and report["train_s_with_callback"] > 0
