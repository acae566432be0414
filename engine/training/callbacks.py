"""What the trainer tells its listeners, and the listener interface (see docs/CONTRACTS.md).

Every event is a small dataclass so a listener (the console bar, the Celery worker's database
writer, a test) gets named fields instead of positional arguments. ``should_stop`` is polled at
every batch boundary: returning True cancels the run after the last completed epoch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@dataclass
class TrainingStarted:
    max_epochs: int
    start_epoch: int
    batches_per_epoch: int
    train_sentences: int
    dev_sentences: int
    device: str
    test_sentences: int = 0


@dataclass
class BatchEnded:
    epoch: int
    batch: int
    batches_per_epoch: int
    loss: float
    learning_rate: float
    sentences_per_s: float
    tokens_per_s: float
    # the epoch's training loss so far: what EpochEnded.train_loss says once the epoch ends
    epoch_loss: float | None = None


@dataclass
class EpochEnded:
    epoch: int
    train_loss: float
    dev_loss: float | None
    dev_scores: dict[str, float] | None
    test_scores: dict[str, float] | None
    learning_rate: float
    is_best: bool
    bad_epochs: int
    seconds: float


@dataclass
class TrainingEnded:
    status: str  # "completed" | "cancelled"
    epochs_done: int
    best_dev_score: float | None
    test_scores: dict[str, float] | None
    model_path: Path | None
    # the final test evaluation in full: the scores, ``main_score_name`` and the ``per_class`` table
    test_details: dict[str, Any] | None = None


class TrainerCallback:
    """Base listener: every hook does nothing, override the ones you need.

    ``stop_reason``: set by a callback whose ``should_stop`` fired, when the stop is not a cancel
    (e.g. ``"shutdown"``: the process is going away and the run will be resumed); the trainer's
    log says it instead of "cancelled"."""

    stop_reason: str | None = None

    def on_train_start(self, info: TrainingStarted) -> None:
        return None

    def on_batch_end(self, info: BatchEnded) -> None:
        return None

    def on_epoch_end(self, info: EpochEnded) -> None:
        return None

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        return None

    def on_train_end(self, info: TrainingEnded) -> None:
        return None

    def should_stop(self) -> bool:
        return False


def _score_text(scores: dict[str, float] | None) -> str:
    if not scores or scores.get("main_score") is None:
        return "-"
    return f"{scores['main_score']:.4f}"


class ConsoleProgress(TrainerCallback):
    """A tqdm bar per epoch and one summary line per epoch, on stderr by default."""

    def __init__(self, stream: TextIO | None = None, disable: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.disable = disable
        self._bar: Any = None
        self._max_epochs = 0

    def on_train_start(self, info: TrainingStarted) -> None:
        self._max_epochs = info.max_epochs
        if not self.disable:
            print(
                f"training on {info.device}: {info.train_sentences} train / {info.dev_sentences} dev "
                f"sentences, {info.batches_per_epoch} batches per epoch, epochs {info.start_epoch}"
                f"-{info.max_epochs}",
                file=self.stream,
            )

    def on_batch_end(self, info: BatchEnded) -> None:
        if self.disable:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=info.batches_per_epoch,
                desc=f"epoch {info.epoch}/{self._max_epochs}",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.update(1)
        self._bar.set_postfix(
            loss=f"{info.loss:.4f}", lr=f"{info.learning_rate:.2g}", tok_s=f"{info.tokens_per_s:.0f}"
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, info: EpochEnded) -> None:
        self._close_bar()
        if self.disable:
            return
        dev_loss = "-" if info.dev_loss is None else f"{info.dev_loss:.4f}"
        print(
            f"epoch {info.epoch}: train loss {info.train_loss:.4f}, dev loss {dev_loss}, "
            f"dev score {_score_text(info.dev_scores)}{' (best)' if info.is_best else ''}, "
            f"lr {info.learning_rate:.4g}, bad epochs {info.bad_epochs}, {info.seconds:.1f} s",
            file=self.stream,
        )

    def on_train_end(self, info: TrainingEnded) -> None:
        self._close_bar()
        if not self.disable:
            print(
                f"training {info.status} after {info.epochs_done} epochs; test score "
                f"{_score_text(info.test_scores)}",
                file=self.stream,
            )
