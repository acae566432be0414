"""bench/stored_reads.py --quick runs and prints one JSON line per read and place, with the promised
fields, and both places, and both ways of reading a split, read the same sentences."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_bench_stored_reads_quick(shared_data: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "stored_reads.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [(r["read"], r["where"], r["files"]) for r in records] == [
        ("split", "in_process", "needed"),
        ("split", "reader", "every"),
        ("split", "reader", "needed"),
        ("text", "in_process", "every"),
        ("text", "reader", "every"),
    ]
    split = {r["sentences"] for r in records if r["read"] == "split"}
    text = {r["sentences"] for r in records if r["read"] == "text"}
    # EWT dev (2,001 sentences) as the only split: an evaluation's split is what is left of it
    # once dev and test are sampled from it, the same in both places
    assert len(split) == 1 and 0 < split.pop() < 2_001
    assert text == {2_001}
    assert all(r["seconds"] > 0 and r["api_peak_growth_mb"] >= 0 for r in records)
