"""Training a character language model on a plain-text corpus folder (see ``corpus.py``).

Each training file ("split") is read as one character stream (reversed for a backward model),
cut into ``mini_batch_size`` parallel streams and trained with truncated back-propagation through
time: windows of ``sequence_length`` characters, the LSTM state carried from one window to the
next (detached) and reset at the start of each split. SGD with gradient-norm clipping; after
every split the validation loss is computed and the learning rate is annealed on it
(``AnnealOnPlateau``, mode ``min``).

Progress goes through the trainer callbacks (``engine.training.callbacks``), where one callback
"epoch" is one training split (validation, annealing and checkpoints happen at that unit):
- ``BatchEnded.tokens_per_s`` is characters per second, ``sentences_per_s`` lines per second;
- ``EpochEnded.dev_loss`` is the validation loss (nats per character) and ``dev_scores`` holds
  ``perplexity`` and ``bits_per_char``; there is no ``main_score`` (lower perplexity is better);
- ``TrainingEnded.best_dev_score`` is the best validation perplexity.

One pass ("max_epochs" counts passes) visits every split once, in an order seeded by the pass
number. ``checkpoint/`` (written atomically after every split) holds the model, the schedule,
the count of completed splits, the RNG state and, when it is not the current model, the best
model (``checkpoint/best-lm/``), so ``load_checkpoint`` + ``train`` continues exactly as if never
interrupted, also in another ``base_path``. It also holds the corpus's fingerprint (each file's
name, size and a digest of its ends): ``load_checkpoint`` refuses a corpus whose files differ,
naming them. ``best-lm/`` is the model with the lowest validation loss.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.language_model.corpus import TextCorpus, fingerprint_differences
from engine.language_model.model import LanguageModel, LanguageModelError
from engine.serialization import atomic_directory, load_tensors, read_json, save_tensors, write_json
from engine.training.callbacks import (
    BatchEnded,
    EpochEnded,
    TrainerCallback,
    TrainingEnded,
    TrainingStarted,
)
from engine.training.run_log import RunLog
from engine.training.schedulers import AnnealOnPlateau

log = logging.getLogger(__name__)

# loss.tsv: one row per training split, named like the sequence trainer's where they mean the same
LOSS_COLUMNS = (
    ("EPOCH", "epoch"),
    ("SPLIT", "split"),
    ("LEARNING_RATE", "learning_rate"),
    ("TRAIN_LOSS", "train_loss"),
    ("DEV_LOSS", "valid_loss"),
    ("DEV_PERPLEXITY", "valid_perplexity"),
    ("CHARS_PER_S", "chars_per_s"),
    ("SECONDS", "seconds"),
)

CHECKPOINT = "checkpoint"
BEST_MODEL = "best-lm"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.safetensors"
MODEL_FOLDER = "model"


@dataclass(frozen=True)
class TrainingArgs:
    """What must stay the same when a run is resumed (the result would differ otherwise)."""

    sequence_length: int = 250
    mini_batch_size: int = 100
    learning_rate: float = 20.0
    anneal_factor: float = 0.25
    patience: int = 10
    clip: float = 0.25
    seed: int = 42

    def check(self) -> None:
        if self.sequence_length < 1 or self.mini_batch_size < 1:
            raise ValueError("sequence_length and mini_batch_size must be positive")
        if self.learning_rate <= 0 or self.clip <= 0:
            raise ValueError("learning_rate and clip must be positive")


@dataclass
class _Progress:
    splits_done: int = 0
    best_valid_loss: float = math.inf
    scheduler: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    # the split after which best-lm/ was saved (0: none yet; None: a checkpoint older than this)
    best_split: int | None = 0


def batchify(ids: torch.Tensor, streams: int) -> torch.Tensor:
    """A 1-d stream -> [length, streams]: column j is the j-th contiguous piece of the text."""
    streams = max(1, min(streams, len(ids) // 2))
    usable = len(ids) // streams * streams
    return ids[:usable].view(streams, -1).t().contiguous()


class LanguageModelTrainer:
    def __init__(self, model: LanguageModel, corpus: TextCorpus | str | Path) -> None:
        self.model = model
        self.corpus = corpus if isinstance(corpus, TextCorpus) else TextCorpus.open(corpus)
        self._progress = _Progress(history=[])
        self._resumed_args: TrainingArgs | None = None
        self._rng_state: torch.Tensor | None = None
        # the checkpoint's CUDA generator states, one per device (dropout on a GPU draws from them)
        self._cuda_rng_states: list[torch.Tensor] = []
        # the checkpoint's copy of best-lm/ (only there when the best model was not its model)
        self._resumed_best: Path | None = None
        self._fingerprint: list[dict[str, Any]] | None = None

    # resume ---------------------------------------------------------------------------------------
    @classmethod
    def load_checkpoint(
        cls, checkpoint_dir: str | Path, corpus: TextCorpus | str | Path
    ) -> LanguageModelTrainer:
        checkpoint_dir = Path(checkpoint_dir)
        state_path = checkpoint_dir / STATE_FILE
        if not state_path.is_file():
            raise LanguageModelError(
                f"{checkpoint_dir} is not a language model checkpoint: missing {STATE_FILE}"
            )
        state = read_json(state_path)
        trainer = cls(LanguageModel.load(checkpoint_dir / MODEL_FOLDER), corpus)
        if "corpus" in state:
            differences = fingerprint_differences(state["corpus"], trainer._corpus_fingerprint())
            if differences:
                more = f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
                raise LanguageModelError(
                    f"{checkpoint_dir}: trained on other files than the corpus {trainer.corpus.folder}: "
                    f"{'; '.join(differences[:5])}{more}: resume with the same corpus"
                )
        elif len(trainer.corpus.train_files) != state["train_files"]:  # a checkpoint older than "corpus"
            raise LanguageModelError(
                f"{checkpoint_dir}: trained on {state['train_files']} training files, "
                f"the corpus has {len(trainer.corpus.train_files)}"
            )
        trainer._resumed_args = TrainingArgs(**state["args"])
        trainer._progress = _Progress(
            splits_done=int(state["splits_done"]),
            best_valid_loss=float(state["best_valid_loss"]),
            scheduler=state["scheduler"],
            history=list(state["history"]),
            best_split=None if state.get("best_split") is None else int(state["best_split"]),
        )
        generators = load_tensors(checkpoint_dir / RNG_FILE)
        trainer._rng_state = generators["torch_cpu"]
        # by device number: as text, "cuda:10" sorts before "cuda:2"
        cuda = sorted((k for k in generators if k.startswith("cuda:")), key=lambda k: int(k.split(":", 1)[1]))
        trainer._cuda_rng_states = [generators[k] for k in cuda]
        best = checkpoint_dir / BEST_MODEL
        trainer._resumed_best = best if best.is_dir() else None
        return trainer

    @property
    def splits_done(self) -> int:
        return self._progress.splits_done

    def _corpus_fingerprint(self) -> list[dict[str, Any]]:
        """The corpus's ``TextCorpus.fingerprint()``, taken once: every checkpoint of the run
        records the files as the run first saw them."""
        if self._fingerprint is None:
            self._fingerprint = self.corpus.fingerprint()
        return self._fingerprint

    # training -------------------------------------------------------------------------------------
    def split_order(self, pass_index: int, seed: int) -> list[int]:
        order = list(range(len(self.corpus.train_files)))
        random.Random(f"{seed}:{pass_index}").shuffle(order)
        return order

    def train(
        self,
        base_path: str | Path,
        sequence_length: int = 250,
        mini_batch_size: int = 100,
        learning_rate: float = 20.0,
        anneal_factor: float = 0.25,
        patience: int = 10,
        clip: float = 0.25,
        max_epochs: int = 1,
        max_seconds: float | None = None,
        checkpoint: bool = True,
        callbacks: Sequence[TrainerCallback] = (),
        device: str | torch.device | None = None,
        seed: int = 42,
    ) -> dict[str, Any]:
        """Train for ``max_epochs`` passes over the training splits, or until ``max_seconds`` have
        passed (checked before each split; the run then ends ``completed`` with
        ``time_budget_reached``). Returns ``{"status", "epochs_done", "time_budget_reached",
        "best_valid_perplexity", "test_perplexity", "model_path", "history"}``; ``epochs_done``
        counts splits, ``history`` has one dict per split (losses, perplexity, chars/s)."""
        args = TrainingArgs(
            sequence_length, mini_batch_size, learning_rate, anneal_factor, patience, clip, seed
        )
        args.check()
        if self._resumed_args is not None and self._resumed_args != args:
            changed = [
                f"{k} (checkpoint {v!r}, now {getattr(args, k)!r})"
                for k, v in asdict(self._resumed_args).items()
                if getattr(args, k) != v
            ]
            raise ValueError("resuming with different training arguments: " + ", ".join(changed))
        base_path = Path(base_path)
        base_path.mkdir(parents=True, exist_ok=True)
        if checkpoint:
            self._corpus_fingerprint()  # before training reads the files, not after the first split
        run_log = RunLog(base_path / "training.log", log)
        self._restore_best_model(base_path)
        device = torch.device(device) if device is not None else torch.device("cpu")
        model = self.model.to(device)
        if self._rng_state is not None:
            torch.set_rng_state(self._rng_state)
            self._rng_state = None
            cuda_states, self._cuda_rng_states = self._cuda_rng_states, []
            if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
        elif self._progress.splits_done == 0:
            torch.manual_seed(seed)

        optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
        scheduler = AnnealOnPlateau(optimizer, factor=anneal_factor, patience=patience, mode="min")
        if self._progress.scheduler is not None:
            scheduler.load_state_dict(self._progress.scheduler)
        valid_ids = model.encode_text(self.corpus.read_valid())
        n_splits = len(self.corpus.train_files)
        total = max_epochs * n_splits
        newline = model.dictionary.get_idx_for_item("\n")
        history = self._progress.history if self._progress.history is not None else []
        _write_loss_tsv(base_path / "loss.tsv", history)
        if self._progress.splits_done:
            run_log(f"resuming after split {self._progress.splits_done} of {total}")
        run_log(
            f"{model.direction} language model, "
            f"{sum(p.numel() for p in model.parameters())} parameters; {n_splits} training file(s), "
            f"{max_epochs} pass(es); device {device}, arguments {asdict(args)}"
        )
        first_len = len(
            batchify(torch.zeros(len(self.corpus.read_train(0)), dtype=torch.long), mini_batch_size)
        )
        for cb in callbacks:
            cb.on_train_start(
                TrainingStarted(
                    max_epochs=total,
                    start_epoch=self._progress.splits_done + 1,
                    batches_per_epoch=max(1, math.ceil((first_len - 1) / sequence_length)),
                    train_sentences=sum(p.read_bytes().count(b"\n") for p in self.corpus.train_files),
                    dev_sentences=self.corpus.valid_file.read_bytes().count(b"\n"),
                    device=str(device),
                    test_sentences=self.corpus.test_file.read_bytes().count(b"\n")
                    if self.corpus.test_file
                    else 0,
                )
            )

        started = time.monotonic()
        status = "completed"
        out_of_time = False
        while self._progress.splits_done < total:
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                out_of_time = True
                break
            unit = self._progress.splits_done
            split = self.split_order(unit // n_splits, seed)[unit % n_splits]
            outcome = self._train_split(model, optimizer, split, unit + 1, args, newline, callbacks, run_log)
            if outcome is None:
                status = "cancelled"
                run_log(f"cancelled in split {unit + 1}: the partial split is dropped")
                break
            train_loss, chars_per_s, seconds = outcome
            valid_loss = self.evaluate_ids(valid_ids, args.mini_batch_size, sequence_length)
            if not math.isfinite(valid_loss) or not math.isfinite(train_loss):
                raise LanguageModelError(
                    f"training diverged on {self.corpus.train_files[split].name} (train loss {train_loss}, "
                    f"validation loss {valid_loss}); lower the learning rate or the clip value"
                )
            is_best = valid_loss < self._progress.best_valid_loss
            # the rate this split trained at (as the sequence trainer's LEARNING_RATE): the one
            # after step_epoch is the next split's, lowered already when this split annealed
            lr_used = scheduler.learning_rate
            scheduler.step_epoch(valid_loss)
            best_split = self._progress.best_split
            if is_best:
                self._progress.best_valid_loss = valid_loss
                model.save(base_path / BEST_MODEL)
                best_split = unit + 1
            record = {
                "epoch": unit + 1,
                "split": self.corpus.train_files[split].name,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "valid_perplexity": _perplexity(valid_loss),
                "chars_per_s": chars_per_s,
                "learning_rate": lr_used,
                "seconds": seconds,
            }
            history.append(record)
            _write_loss_tsv(base_path / "loss.tsv", history)
            run_log(
                f"split {unit + 1} of {total} ({record['split']}): train loss {train_loss:.4f}, validation "
                f"perplexity {record['valid_perplexity']:.3f}{' (best)' if is_best else ''}, "
                f"lr {lr_used:.4g}, {chars_per_s:.0f} characters/s"
            )
            self._progress = _Progress(
                unit + 1, self._progress.best_valid_loss, scheduler.state_dict(), history, best_split
            )
            for cb in callbacks:
                cb.on_epoch_end(
                    EpochEnded(
                        epoch=unit + 1,
                        train_loss=train_loss,
                        dev_loss=valid_loss,
                        dev_scores={
                            "perplexity": _perplexity(valid_loss),
                            "bits_per_char": valid_loss / math.log(2),
                        },
                        test_scores=None,
                        learning_rate=lr_used,
                        is_best=is_best,
                        bad_epochs=scheduler.bad_epochs,
                        seconds=seconds,
                    )
                )
            if checkpoint:
                path = self.save_checkpoint(base_path / CHECKPOINT, args, base_path / BEST_MODEL)
                for cb in callbacks:
                    cb.on_checkpoint(path, unit + 1)

        best_path = base_path / BEST_MODEL
        test_loss: float | None = None
        test_text = self.corpus.read_test()
        if status == "completed" and test_text is not None and best_path.is_dir():
            best = LanguageModel.load(best_path, device=device)
            test_loss = _evaluate(best, best.encode_text(test_text), args.mini_batch_size, sequence_length)
        best_ppl = (
            _perplexity(self._progress.best_valid_loss) if self._progress.best_valid_loss < math.inf else None
        )
        test_scores = {"perplexity": _perplexity(test_loss)} if test_loss is not None else None
        run_log(
            f"training {status} after {self._progress.splits_done} splits"
            + (" (time budget reached)" if out_of_time else "")
            + (f"; best validation perplexity {best_ppl:.3f}" if best_ppl is not None else "")
            + (f"; test perplexity {test_scores['perplexity']:.3f}" if test_scores else "")
        )
        for cb in callbacks:
            cb.on_train_end(
                TrainingEnded(
                    status=status,
                    epochs_done=self._progress.splits_done,
                    best_dev_score=best_ppl,
                    test_scores=test_scores,
                    model_path=best_path if best_path.is_dir() else None,
                )
            )
        return {
            "status": status,
            "epochs_done": self._progress.splits_done,
            "time_budget_reached": out_of_time,
            "best_valid_perplexity": best_ppl,
            "test_perplexity": test_scores["perplexity"] if test_scores else None,
            "model_path": best_path if best_path.is_dir() else None,
            "history": list(history),
        }

    def _train_split(
        self,
        model: LanguageModel,
        optimizer: torch.optim.Optimizer,
        split: int,
        epoch: int,
        args: TrainingArgs,
        newline: int,
        callbacks: Sequence[TrainerCallback],
        run_log: Callable[[str], None],
    ) -> tuple[float, float, float] | None:
        """One split; None when a callback asked to stop (the partial split is dropped). Logs a
        line every tenth of it: a split of a large corpus takes an hour."""
        data = batchify(model.encode_text(self.corpus.read_train(split)), args.mini_batch_size)
        if len(data) < 2:
            raise LanguageModelError(f"{self.corpus.train_files[split]}: too short to train on")
        model.train()
        hidden = model.init_hidden(data.shape[1])
        device = model.decoder.weight.device
        starts = range(0, len(data) - 1, args.sequence_length)
        log_every = max(1, len(starts) // 10)
        loss_sum, chars, lines = 0.0, 0, 0
        began = time.monotonic()
        for batch, start in enumerate(starts, start=1):
            if any(cb.should_stop() for cb in callbacks):
                return None
            window = data[start : start + args.sequence_length + 1].to(device)
            inputs, targets = window[:-1], window[1:]
            hidden = (hidden[0].detach(), hidden[1].detach())
            logits, hidden = model(inputs, hidden)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            value = loss.item()
            loss_sum += value * inputs.numel()
            chars += inputs.numel()
            lines += int((inputs == newline).sum())
            elapsed = max(time.monotonic() - began, 1e-9)
            for cb in callbacks:
                cb.on_batch_end(
                    BatchEnded(
                        epoch=epoch,
                        batch=batch,
                        batches_per_epoch=len(starts),
                        loss=value,
                        learning_rate=float(optimizer.param_groups[0]["lr"]),
                        sentences_per_s=lines / elapsed,
                        tokens_per_s=chars / elapsed,
                        epoch_loss=loss_sum / chars,
                    )
                )
            if batch % log_every == 0:
                run_log(
                    f"split {epoch} - batch {batch}/{len(starts)} - loss {loss_sum / chars:.4f} - "
                    f"{chars / elapsed:.0f} characters/s"
                )
        seconds = time.monotonic() - began
        return loss_sum / chars, chars / max(seconds, 1e-9), seconds

    def evaluate_ids(self, ids: torch.Tensor, streams: int, sequence_length: int) -> float:
        return _evaluate(self.model, ids, streams, sequence_length)

    def evaluate_text(self, text: str, streams: int = 100, sequence_length: int = 250) -> float:
        """Mean loss (nats per character) of the model on ``text`` (natural order)."""
        return _evaluate(self.model, self.model.encode_text(text), streams, sequence_length)

    def _restore_best_model(self, base_path: Path) -> None:
        """Put the resumed checkpoint's best model into ``base_path``. A resumed run (a requeued
        job's, in a fresh folder) that never beat the checkpoint's best validation loss saved no
        best-lm/ of its own, so it ended without a model and without a test perplexity, where
        the uninterrupted run tested the best model."""
        progress = self._progress
        target = base_path / BEST_MODEL
        if self._resumed_best is not None:
            if self._resumed_best.resolve() != target.resolve():
                with atomic_directory(target) as staging:
                    shutil.copytree(self._resumed_best, staging, dirs_exist_ok=True)
        elif progress.best_split and progress.best_split == progress.splits_done:
            self.model.save(target)  # the checkpoint's own model is the best one
        self._resumed_best = None

    # checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(
        self, directory: Path, args: TrainingArgs, best_model_dir: Path | None = None
    ) -> Path:
        """``best_model_dir`` (the run's best-lm/) is copied in when the best model is not the
        current one, so a run resumed elsewhere keeps it."""
        progress = self._progress
        copy_best = (
            best_model_dir is not None
            and best_model_dir.is_dir()
            and progress.best_split != progress.splits_done
        )

        def write(folder: Path) -> None:
            self.model.save(folder / MODEL_FOLDER)
            if copy_best and best_model_dir is not None:
                shutil.copytree(best_model_dir, folder / BEST_MODEL)
            state = {
                "format_version": 1,
                "args": asdict(args),
                "splits_done": progress.splits_done,
                "train_files": len(self.corpus.train_files),
                "corpus": self._corpus_fingerprint(),
                "best_valid_loss": progress.best_valid_loss,
                "best_split": progress.best_split,
                "scheduler": progress.scheduler,
                "history": progress.history,
            }
            write_json(folder / STATE_FILE, state)
            generators = {"torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                # a resumed run on a GPU draws the same dropout masks as the uninterrupted one
                for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
                    generators[f"cuda:{i}"] = cuda_state
            save_tensors(folder / RNG_FILE, generators)

        with atomic_directory(directory) as staging:
            write(staging)
        return directory


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # stays a finite float (JSON) for an untrained model


@torch.no_grad()
def _evaluate(model: LanguageModel, ids: torch.Tensor, streams: int, sequence_length: int) -> float:
    was_training = model.training
    model.eval()
    data = batchify(ids, streams)
    if len(data) < 2:
        raise LanguageModelError("evaluation text is too short (needs at least two characters per stream)")
    device = model.decoder.weight.device
    hidden = model.init_hidden(data.shape[1])
    total, count = 0.0, 0
    for start in range(0, len(data) - 1, sequence_length):
        window = data[start : start + sequence_length + 1].to(device)
        logits, hidden = model(window[:-1], hidden)
        total += float(
            F.cross_entropy(logits.view(-1, logits.shape[-1]), window[1:].reshape(-1), reduction="sum")
        )
        count += window[1:].numel()
    model.train(was_training)
    return total / count


def _write_loss_tsv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewritten from the history after every split, so a resumed run's file is whole."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(name for name, _ in LOSS_COLUMNS)
        for record in history:
            writer.writerow(
                f"{v:.6g}" if isinstance(v := record.get(key), float) else "" if v is None else v
                for _, key in LOSS_COLUMNS
            )
