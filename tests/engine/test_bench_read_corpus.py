"""bench/read_corpus.py --quick runs and prints one JSON line with the promised fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_bench_read_corpus_quick(shared_data: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "read_corpus.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["sentences"] == 2_001  # EWT dev
    assert record["tokens"] == sum(
        1
        for line in (shared_data / "ud_english_ewt" / "dev.conllu").read_text(encoding="utf-8").splitlines()
        if line.split("\t", 1)[0].isdigit()
    )
    assert 0 < record["seconds"] < 30
    assert 0 < record["peak_rss_mb"] < 1000
