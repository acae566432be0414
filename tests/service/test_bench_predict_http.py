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
