"""examples/read_corpus_demo.py prints statistics and tagged sentences of the bundled sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_demo_on_bundled_sample() -> None:
    sample = REPO_ROOT / "examples" / "data" / "sample_ner.conll"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "read_corpus_demo.py"),
            str(sample),
            "--sentences",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = result.stdout
    assert "label types: ner (span, BIO)" in out
    assert "documents: 2" in out
    assert '"Ada Lovelace"/PER' in out


def test_demo_reports_a_malformed_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\nrejects\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "read_corpus_demo.py"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "bad.txt, line 2: token 'rejects' without a tag" in result.stderr
