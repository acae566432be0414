from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_predict_http_bench_quick_prints_one_line_per_level() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "predict_http.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["concurrency"] for r in rows] == [1, 16]
    for row in rows:
        assert row["errors"] == 0 and row["requests"] > 0
        assert row["sentences_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]


def test_predict_large_bench_quick_prints_the_small_requests_wait() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "predict_large.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert row["large_texts"] == 16 and 0 < row["large_chars"] <= 16 * 2000
    assert row["large_s"] > 0 and row["large_answer_mb"] > 0
    assert row["small_requests"] >= 0 and row["small_p50_ms"] <= row["small_max_ms"]
