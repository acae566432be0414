"""Shared helpers of the training benchmarks: paths, JSON lines, peak memory, a progress callback."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from engine.training.callbacks import BatchEnded, EpochEnded, TrainerCallback  # noqa: E402

if TYPE_CHECKING:
    from engine.readers.classification import ClassificationCorpus

DATA = REPO_ROOT.parent / "shared" / "data"


def data_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (see ../shared/data/README.md)")
    return path


def trec_corpus() -> ClassificationCorpus:
    """TREC-6 with the coarse class as ``question_class``. Only train is here, so a seeded 10% of
    it is held out as the dev split (the same questions in every run)."""
    from engine.readers.classification import ClassificationCorpus

    return ClassificationCorpus(
        train_file=data_file("trec6", "train.txt"),
        format="fasttext",
        label_prefix=None,
        label_separator=":",
        label_type="question_class",
        sample_missing_splits="only_dev",
        seed=42,
    )


def set_threads(threads: int | None) -> None:
    """Intra-op threads for torch (None: torch's default, one per core). The benchmarks default to
    one: the LSTM/CRF ops of these models are small, and with two threads on a 2-core machine that
    is also running anything else, every op waits for a descheduled thread (measured: 591 vs
    8,234 tokens/s for the NER tagger under load). Try ``--threads 2`` on an idle machine."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once so a reader sees epochs as they finish."""
    print(json.dumps(record), flush=True)


def output_dir(requested: Path | None, name: str) -> Path:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        return requested
    folder = Path(tempfile.mkdtemp(prefix=f"tagsmith-bench-{name}-"))
    # nobody asked for the models (88 MB a TREC run): they would pile up in /tmp run after run
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class EpochPrinter(TrainerCallback):
    """Prints ``{epoch, tokens_per_s, train_loss, dev_<metric>, ...}`` after every epoch.

    ``tokens_per_s`` is the training throughput of the epoch (the last batch's running rate,
    evaluation excluded); ``epoch_s`` is the whole epoch including the dev evaluation."""

    def __init__(self, metric: str, score_key: str) -> None:
        self.metric = metric
        self.score_key = score_key
        self.last_batch: BatchEnded | None = None
        self.best: float | None = None
        self.last: float | None = None
        self.started = time.perf_counter()

    def on_batch_end(self, info: BatchEnded) -> None:
        self.last_batch = info

    def on_epoch_end(self, info: EpochEnded) -> None:
        score = None if info.dev_scores is None else info.dev_scores.get(self.score_key)
        self.last = score
        if score is not None and (self.best is None or score > self.best):
            self.best = score
        emit(
            {
                "epoch": info.epoch,
                "tokens_per_s": round(self.last_batch.tokens_per_s, 1) if self.last_batch else None,
                "sentences_per_s": round(self.last_batch.sentences_per_s, 2) if self.last_batch else None,
                "train_loss": round(info.train_loss, 5),
                f"dev_{self.metric}": None if score is None else round(score, 5),
                "dev_loss": None if info.dev_loss is None else round(info.dev_loss, 5),
                "learning_rate": info.learning_rate,
                "epoch_s": round(info.seconds, 2),
            }
        )


def training_parser(doc: str | None, epochs: int, quick_help: str) -> argparse.ArgumentParser:
    """The options every training benchmark shares; scripts add their own on top."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--epochs", type=int, default=epochs, help=f"maximum number of epochs (default {epochs})"
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: see bench/_common.py)"
    )
    parser.add_argument(
        "--out", type=Path, help="training folder, kept (default: a temporary folder, removed at the end)"
    )
    return parser
