"""The README's engine example runs as written (two epochs instead of ten, in a temporary folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.cli.readme import REPO_ROOT, code_blocks, readme_text


def _python_example() -> str:
    text = readme_text()
    start, end = text.index("<!-- python-example:start -->"), text.index("<!-- python-example:end -->")
    (block,) = code_blocks("python", text[start:end])
    return block


def test_readme_engine_example_trains_loads_and_predicts(tmp_path: Path) -> None:
    code = _python_example()
    assert "max_epochs=10" in code and '"runs/sample-ner' in code
    code = code.replace("max_epochs=10", "max_epochs=2").replace(
        '"runs/sample-ner', f'"{tmp_path}/sample-ner'
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "'sentences': 150" in lines[0]
    assert re.match(r"^I love Berlin \.", lines[-2]), lines[-2]
    # two sentences from one text, as /predict splits them; spans are whatever 2 epochs learned
    assert re.match(r"^2 \[('[^']*'(, )?)*\]$", lines[-1]), lines[-1]
    assert (tmp_path / "sample-ner" / "best-model" / "config.json").is_file()
    assert list((tmp_path / "sample-ner" / "best-model").glob("*.safetensors"))
