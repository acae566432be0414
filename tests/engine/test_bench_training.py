"""Each training benchmark's --quick mode runs and prints the promised JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT


def run_bench(script: str, *arguments: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The JSON lines a benchmark script prints."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def run_quick(script: str, tmp_path: Path) -> list[dict[str, Any]]:
    records = run_bench(script, "--quick", "--out", str(tmp_path / "run"))
    assert len(records) == 2, records  # one epoch, then the summary
    epoch, summary = records
    assert epoch["epoch"] == 1
    assert epoch["tokens_per_s"] > 0 and epoch["train_loss"] > 0 and epoch["epoch_s"] > 0
    assert summary["wall_s"] > 0 and 0 < summary["peak_rss_mb"] < 8000
    assert (tmp_path / "run" / "loss.tsv").is_file() and (tmp_path / "run" / "training.log").is_file()
    return records


@pytest.mark.parametrize(
    ("script", "epoch_score", "summary_score"),
    [
        ("train_ner.py", "dev_f1", "best_dev_f1"),
        ("train_upos.py", "dev_accuracy", "best_dev_accuracy"),
        ("train_multi.py", "dev_accuracy", "best_dev_accuracy"),
        ("train_trec.py", "dev_accuracy", "final_dev_accuracy"),
    ],
)
def test_training_benchmark_quick_mode(
    script: str, epoch_score: str, summary_score: str, tmp_path: Path, shared_data: Path
) -> None:
    epoch, summary = run_quick(script, tmp_path)
    assert 0.0 <= epoch[epoch_score] <= 1.0
    assert 0.0 <= summary[summary_score] <= 1.0
    assert summary["benchmark"] == script.removesuffix(".py")
    if script == "train_multi.py":
        assert 0.0 <= summary["dev_accuracy_en"] <= 1.0 and 0.0 <= summary["dev_accuracy_de"] <= 1.0


def test_a_benchmark_without_out_leaves_no_training_folder_behind(tmp_path: Path, shared_data: Path) -> None:
    # Each TREC run left 88 MB of models in /tmp.
    records = run_bench("train_ner.py", "--quick", env={**os.environ, "TMPDIR": str(tmp_path)})
    assert records[-1]["best_dev_f1"] >= 0.0
    assert list(tmp_path.glob("tagsmith-bench-*")) == []


def test_fine_tune_step_benchmark_compares_the_optimizer_implementations(shared_data: Path) -> None:
    import torch

    from engine.precision import amp_dtype

    *variants, summary = run_bench("fine_tune_step.py", "--quick", "--device", "cpu")
    names = [record["optimizer"] for record in variants]
    mixed = ["AdamW (fused, bfloat16 autocast)"] if amp_dtype(torch.device("cpu")) else []
    assert names == ["AdamW (foreach)", "AdamW (fused)", *mixed]
    for record in variants:
        parts = record["forward_ms"] + record["backward_ms"] + record["clip_ms"] + record["step_ms"]
        assert record["total_ms"] == pytest.approx(parts, abs=0.5) and record["sentences_per_s"] > 0
    foreach, fused = variants[:2]
    assert summary["speedup"] == pytest.approx(foreach["total_ms"] / fused["total_ms"], abs=0.01)


def test_trec_split_written_for_another_tool_is_the_benchmarks_split(
    tmp_path: Path, shared_data: Path
) -> None:
    # bench/baselines/flair_trec.py trains Flair on these files: they must hold the questions the
    # benchmark trains and evaluates on, each as the TREC file writes it, with its coarse class.
    records = run_bench("train_trec.py", "--write-split", str(tmp_path))
    assert [r["questions"] for r in records] == [4907, 545]
    source = (shared_data / "trec6" / "train.txt").read_text(encoding="utf-8").splitlines()
    expected = sorted(f"__label__{line.split(':', 1)[0]} {line.split(' ', 1)[1]}" for line in source)
    train = (tmp_path / "train.txt").read_text(encoding="utf-8").splitlines()
    held_out = (tmp_path / "dev.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(train + held_out) == expected


def test_trec_tuning_split_never_holds_a_held_out_question(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --tune scores settings on part of train so that the held-out questions stay unseen until
    # the chosen settings are measured once on them.
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    from _common import trec_corpus
    from train_trec import tuning_split

    corpus = trec_corpus()
    train, tuning = tuning_split(corpus.train)
    assert (len(train), len(tuning)) == (4907 - 490, 490)
    assert {id(s) for s in train} | {id(s) for s in tuning} == {id(s) for s in corpus.train}
    assert not {id(s) for s in train} & {id(s) for s in tuning}
    assert not {id(s) for s in train + tuning} & {id(s) for s in corpus.dev}
    assert [s.to_original_text() for s in tuning] == [
        s.to_original_text() for s in tuning_split(trec_corpus().train)[1]
    ]
