"""``ModelTrainer``: trains any engine model the way the tutorial does, reports progress to
callbacks, writes loss.tsv / training.log / weights.txt / test.tsv, and checkpoints every epoch.

One epoch: build the batches from a generator seeded by (run seed, epoch), so a resumed run sees
the same batches (by default length-bucketed: see ``_Run._epoch_batches``); for every mini-batch
(split into chunks when asked) backpropagate the SUMMED loss of each chunk, so the accumulated
gradient is the whole batch's and chunking changes memory use but not the update (with
``loss_reduction="mean"`` it is then divided by the batch's item count); clip, step, schedule.
After the epoch: evaluate on dev, track the best model, anneal, log, checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.data import Corpus, Sentence
from engine.embeddings.base import StorageMode, clear_stored_embeddings, set_storage_mode
from engine.models.base import Model
from engine.precision import amp_dtype
from engine.serialization import atomic_write_bytes
from engine.training.callbacks import (
    BatchEnded,
    ConsoleProgress,
    EpochEnded,
    TrainerCallback,
    TrainingEnded,
    TrainingStarted,
)
from engine.training.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    TrainerState,
    read_checkpoint,
    restore_rng,
    write_checkpoint,
)
from engine.training.run_log import RunLog
from engine.training.schedulers import (
    AnnealOnPlateau,
    ConstantRate,
    LinearWarmupDecay,
    OneCycle,
    Scheduler,
    SchedulerConfigError,
    scheduler_kind,
)

log = logging.getLogger(__name__)

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
_FUSABLE = frozenset(OPTIMIZERS.values())
SCORE_KEYS: tuple[tuple[str, str], ...] = (
    ("PRECISION", "micro_precision"),
    ("RECALL", "micro_recall"),
    ("F1", "micro_f1"),
    ("ACCURACY", "accuracy"),
)
BASE_COLUMNS: tuple[str, ...] = ("EPOCH", "TIMESTAMP", "BAD_EPOCHS", "LEARNING_RATE", "TRAIN_LOSS")
STORAGE_MODES = ("none", "cpu", "gpu")
# Length bucketing sorts pools of this many mini-batches by sentence length.
BUCKET_POOL = 8


class TrainerConfigError(ValueError):
    """An invalid argument to ``train``/``fine_tune``; the message names it."""


class TrainingDiverged(RuntimeError):
    """The weights became NaN or infinite: training cannot recover, a lower rate might."""


def loss_columns(with_dev: bool, with_test: bool) -> list[str]:
    """The header of loss.tsv."""
    columns = list(BASE_COLUMNS)
    for split, present in (("DEV", with_dev), ("TEST", with_test)):
        if present:
            columns.append(f"{split}_LOSS")
            columns.extend(f"{split}_{name}" for name, _ in SCORE_KEYS)
    return columns


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device) == "gpu":
        device = "cuda"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise TrainerConfigError(f"device {str(device)!r} asked for, but this machine has no CUDA device")
    return resolved


def _optimizer_class(optimizer: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    if isinstance(optimizer, str):
        cls = OPTIMIZERS.get(optimizer.lower())
        if cls is None:
            raise TrainerConfigError(f"unknown optimizer {optimizer!r} (known: {', '.join(OPTIMIZERS)})")
        return cls
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer
    raise TrainerConfigError(f"optimizer must be a torch.optim.Optimizer class or a name, got {optimizer!r}")


def _fused(cls: type[torch.optim.Optimizer], params: list[nn.Parameter]) -> dict[str, bool]:
    """``fused=True`` for torch's SGD, Adam and AdamW (which have a fused kernel on both the CPU
    and CUDA): one pass per step instead of a dozen over every parameter. For a fine-tuned
    transformer that matters: an AdamW step over MiniLM's 22.7M parameters (half of them the
    word-piece embeddings, whose gradient is dense) took 112.8 ms with the default implementation
    against 15.9 ms fused, in a 297.7 ms step (``bench/fine_tune_step.py``, one Zen 4 core). Other
    optimizers, whose fused kernels cover fewer devices, run as they are."""
    if cls not in _FUSABLE or not params:
        return {}
    devices = {p.device.type for p in params}
    if len(devices) != 1 or devices - {"cpu", "cuda"} or not all(p.is_floating_point() for p in params):
        return {}
    return {"fused": True}


def _chunks(items: Sequence[Sentence], size: int | None) -> list[Sequence[Sentence]]:
    if not size or size >= len(items):
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)]


def _scores(result: Any) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.to_dict().items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


class _WeightWriter:
    """weights.txt: a few fixed entries of every trainable tensor, several times per epoch."""

    SAMPLES = 10

    HEADER = "ITERATION\tPARAMETER\tINDEX\tVALUE\n"

    def __init__(self, path: Path, model: nn.Module, seed: int, done_iterations: int) -> None:
        """``done_iterations``: the batches the checkpoint a run resumes from has trained (0 for a
        new run)."""
        self.path = path
        generator = torch.Generator().manual_seed(seed)
        self.picks: dict[str, list[int]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad and param.numel() > 0:
                count = min(self.SAMPLES, param.numel())
                self.picks[name] = torch.randperm(param.numel(), generator=generator)[:count].tolist()
        if done_iterations == 0 or not path.exists():
            path.write_text(self.HEADER, encoding="utf-8")
        else:
            self._drop_after(done_iterations)

    def _drop_after(self, iteration: int) -> None:
        # A run cancelled or failed inside an epoch sampled part of it; the resumed run trains that
        # epoch again from the checkpoint, and its samples replace those.
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.readlines()
        kept = [self.HEADER]
        for line in lines[1:]:
            head = line.split("\t", 1)[0]
            if head.isdigit() and int(head) <= iteration:
                kept.append(line)
        if len(kept) < len(lines):
            atomic_write_bytes(self.path, "".join(kept).encode("utf-8"))

    def write(self, iteration: int, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        lines: list[str] = []
        for name, picks in self.picks.items():
            flat = params[name].detach().reshape(-1)
            values = flat[torch.tensor(picks, device=flat.device)].float().cpu().tolist()
            lines.extend(f"{iteration}\t{name}\t{i}\t{v:.6g}" for i, v in zip(picks, values, strict=True))
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")


class ModelTrainer:
    """``ModelTrainer(model, corpus).train(base_path, ...)``; ``load_checkpoint`` to continue."""

    def __init__(self, model: Model, corpus: Corpus) -> None:
        self.model = model
        self.corpus = corpus
        self._resume: LoadedCheckpoint | None = None

    # -- resume ------------------------------------------------------------------------------------
    @classmethod
    def load_checkpoint(cls, checkpoint_dir: str | Path, corpus: Corpus) -> ModelTrainer:
        """A trainer whose next ``train(..., max_epochs=N)`` continues the checkpointed run up to
        N epochs in total."""
        from engine.models.base import load_model

        loaded = read_checkpoint(Path(checkpoint_dir))
        trainer = cls(load_model(loaded.model_dir), corpus)
        trainer._resume = loaded
        return trainer

    # -- public entry points -----------------------------------------------------------------------
    def fine_tune(
        self,
        base_path: str | Path,
        learning_rate: float = 5e-5,
        max_epochs: int = 10,
        optimizer: str | type[torch.optim.Optimizer] = torch.optim.AdamW,
        scheduler: str | type | None = "linear",
        warmup_fraction: float = 0.1,
        mini_batch_size: int = 4,
        embeddings_storage_mode: str = "none",
        use_final_model_for_eval: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The tutorial's transformer fine-tuning defaults: AdamW at 5e-5 with 10% linear warm-up
        then linear decay, nothing kept on the sentences, and the final model (not the best on
        dev) is the one evaluated and kept."""
        return self.train(
            base_path,
            learning_rate=learning_rate,
            max_epochs=max_epochs,
            optimizer=optimizer,
            scheduler=scheduler,
            warmup_fraction=warmup_fraction,
            mini_batch_size=mini_batch_size,
            embeddings_storage_mode=embeddings_storage_mode,
            use_final_model_for_eval=use_final_model_for_eval,
            **kwargs,
        )

    def train(
        self,
        base_path: str | Path,
        learning_rate: float = 0.1,
        mini_batch_size: int = 32,
        mini_batch_chunk_size: int | None = None,
        max_epochs: int = 100,
        optimizer: str | type[torch.optim.Optimizer] = torch.optim.SGD,
        scheduler: str | type | None = "anneal",
        anneal_factor: float = 0.5,
        patience: int = 3,
        min_learning_rate: float = 1e-4,
        anneal_with_restarts: bool = False,
        weight_decay: float = 0.0,
        train_with_dev: bool = False,
        shuffle: bool = True,
        embeddings_storage_mode: str = "cpu",
        checkpoint: bool = False,
        write_weights: bool = False,
        use_amp: bool = False,
        max_grad_norm: float | None = 5.0,
        seed: int | None = None,
        eval_batch_size: int = 64,
        monitor_test: bool = False,
        callbacks: Sequence[TrainerCallback] | None = None,
        device: str | torch.device | None = None,
        warmup_fraction: float = 0.1,
        use_final_model_for_eval: bool = False,
        save_final_model: bool = True,
        length_bucketing: bool = True,
        loss_reduction: str = "sum",
        decoder_learning_rate: float | None = None,
    ) -> dict[str, Any]:
        """Train; returns ``{"status", "epochs_done", "best_dev_score", "test_scores", "test_score",
        "test_details", "model_path", "train_loss_history", "dev_loss_history", "dev_score_history"}``
        (``test_details``: the final test scores with ``main_score_name`` and the ``per_class`` table).

        ``callbacks=None`` shows the console progress bar; pass a list (possibly with
        ``ConsoleProgress()``) to choose the listeners yourself. ``length_bucketing`` (with
        ``shuffle``) builds each epoch's batches from sentences of similar length (see
        ``_Run._epoch_batches``); ``use_final_model_for_eval`` skips best-model selection.
        ``loss_reduction``: the gradient is that of the batch's summed loss (``"sum"``, as in
        Flair, whose SGD learning rates assume it) or of its mean per item (``"mean"``); either
        way it does not depend on ``mini_batch_chunk_size``, and the reported losses are means.
        ``decoder_learning_rate``: a rate of its own for everything outside the embeddings (the
        freshly initialised layers on top of a fine-tuned transformer); every schedule scales it
        alongside ``learning_rate``, which is the rate reported and compared with the minimum."""
        run = _Run(self, locals())
        return run.execute()


class _Run:
    """One call of ``train``: the arguments, the state that changes per epoch, and the loop."""

    def __init__(self, trainer: ModelTrainer, args: dict[str, Any]) -> None:
        self.trainer = trainer
        self.model: Model = trainer.model
        self.corpus = trainer.corpus
        self.a = {k: v for k, v in args.items() if k != "self"}
        self._validate()
        self.base_path = Path(self.a["base_path"])
        self.base_path.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(self.a["device"])
        mode: StorageMode = self.a["embeddings_storage_mode"]  # checked by _validate
        self.storage_mode: StorageMode = "cpu" if mode == "gpu" and self.device.type != "cuda" else mode
        self.callbacks: list[TrainerCallback] = (
            [ConsoleProgress()] if self.a["callbacks"] is None else list(self.a["callbacks"])
        )
        self.amp_dtype = amp_dtype(self.device) if self.a["use_amp"] else None
        self.use_amp = self.amp_dtype is not None
        self.log = RunLog(self.base_path / "training.log", log)

        self.train_data: list[Sentence] = list(self.corpus.train)
        self.dev_data: list[Sentence] = list(self.corpus.dev)
        self.test_data: list[Sentence] = list(self.corpus.test)
        if self.a["train_with_dev"]:
            self.train_data += self.dev_data
        if not self.train_data:
            raise TrainerConfigError("the corpus has no training sentences")
        if not any(self._gold(s) for s in self.train_data):
            # Without one gold label the loss is all "O" (or nothing for a classifier): the run
            # completed with a model that never predicts anything, e.g. after tag_type="NER" with
            # a dictionary made from "ner".
            raise TrainerConfigError(self._no_gold_message())
        dictionary = getattr(self.model, "label_dictionary", None)
        classifier = getattr(self.model, "label_kind", None) == "sentence"
        if classifier and dictionary is not None and not self.model.multi_label and len(dictionary) == 1:
            # its loss is 0 and every prediction that class: a run would learn nothing
            raise TrainerConfigError(
                f"a classifier needs at least two classes; {self._label_type()!r} has only "
                f"{dictionary.get_items()[0]!r} (multi_label=True learns yes/no for one label)"
            )
        # Model selection and annealing follow the dev score when there is a separate dev split.
        self.use_dev = bool(self.dev_data) and not self.a["train_with_dev"]
        if self.use_dev and not any(self._gold(s) for s in self.dev_data):
            # Its score would be 0 (or undefined) whatever the model does: model selection would
            # keep the first epoch and annealing would stop the run early.
            self.use_dev = False
            self.log(
                f"the dev split has no gold {self._label_type()} labels, so it cannot score the model: "
                "model selection and annealing follow the training loss, as without a dev split"
            )
        self.monitor_test = bool(self.a["monitor_test"]) and bool(self.test_data)
        self.batches_per_epoch = math.ceil(len(self.train_data) / self.a["mini_batch_size"])
        self.columns = loss_columns(self.use_dev, self.monitor_test)
        if mode != self.storage_mode:
            self.log(
                f"embeddings_storage_mode gpu needs a CUDA device; this run on {self.device} keeps them on the cpu"
            )

    def _fingerprint(self, sentences: list[Sentence]) -> str:
        """A digest of ``sentences`` and their gold labels, so that a resume on another corpus (of
        the same size) is refused rather than trained on silently."""
        label_type = self._label_type()
        digest = hashlib.sha256()
        for sentence in sentences:
            digest.update("\x1f".join(token.text for token in sentence.tokens).encode())
            labels = [label.value for label in sentence.labels.get(label_type, [])]
            labels += [f"{s.start}:{s.end}:{s.label.value}" for s in sentence.spans.get(label_type, [])]
            labels += [t.labels[label_type].value for t in sentence.tokens if label_type in t.labels]
            digest.update(("\x1e" + "\x1f".join(labels) + "\x1d").encode())
        return digest.hexdigest()

    def _eval_fingerprint(self) -> str:
        """The dev and test splits' digest: dev chooses the best model and the annealing, test
        the final scores (and loss.tsv's test columns with monitor_test)."""
        both = self._fingerprint(self.dev_data) + self._fingerprint(self.test_data)
        return hashlib.sha256(both.encode()).hexdigest()

    def _label_type(self) -> str:
        return str(getattr(self.model, "label_type", "gold"))

    def _gold(self, sentence: Sentence) -> bool:
        """Whether ``sentence`` has a gold label of the model's type (a span, a tag, a class)."""
        label_type = self._label_type()
        return bool(sentence.get_labels(label_type))

    def _no_gold_message(self) -> str:
        found = sorted({name for s in self.train_data for name in s.label_types()})
        return (
            f"no training sentence has a {self._label_type()!r} label, so there is nothing to learn "
            f"(the training split's label types: {', '.join(found) or 'none'}); build the model "
            "with a label type of the corpus"
        )

    def _validate(self) -> None:
        a = self.a
        for name in ("mini_batch_size", "max_epochs", "eval_batch_size"):
            if not isinstance(a[name], int) or a[name] < 1:
                raise TrainerConfigError(f"{name} must be a positive integer, got {a[name]!r}")
        chunk = a["mini_batch_chunk_size"]
        if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
            raise TrainerConfigError(
                f"mini_batch_chunk_size must be a positive integer or None, got {chunk!r}"
            )
        if not 0 < a["learning_rate"] < math.inf:
            raise TrainerConfigError(f"learning_rate must be a finite number > 0, got {a['learning_rate']!r}")
        if a["decoder_learning_rate"] is not None and not 0 < a["decoder_learning_rate"] < math.inf:
            raise TrainerConfigError(
                f"decoder_learning_rate must be a finite number > 0 or None, got {a['decoder_learning_rate']!r}"
            )
        for name in ("weight_decay", "min_learning_rate", "anneal_factor", "warmup_fraction"):
            if not math.isfinite(a[name]):
                raise TrainerConfigError(f"{name} must be a finite number, got {a[name]!r}")
        if a["embeddings_storage_mode"] not in STORAGE_MODES:
            raise TrainerConfigError(
                f"embeddings_storage_mode must be one of {STORAGE_MODES}, got {a['embeddings_storage_mode']!r}"
            )
        if a["loss_reduction"] not in ("sum", "mean"):
            raise TrainerConfigError(f"loss_reduction must be 'sum' or 'mean', got {a['loss_reduction']!r}")
        if a["max_grad_norm"] is not None and a["max_grad_norm"] <= 0:
            raise TrainerConfigError(f"max_grad_norm must be > 0 or None, got {a['max_grad_norm']!r}")
        _optimizer_class(a["optimizer"])
        if scheduler_kind(a["scheduler"]) == "anneal" and a["learning_rate"] < a["min_learning_rate"]:
            # the run would end before its first epoch, with nothing trained
            raise TrainerConfigError(
                f"learning_rate {a['learning_rate']:g} is below min_learning_rate {a['min_learning_rate']:g}: "
                "annealing stops as soon as the rate is below the minimum"
            )

    # -- setup -------------------------------------------------------------------------------------
    def _seed(self) -> int:
        seed = self.a["seed"]
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            return int(seed)
        return random.randrange(2**31)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainerConfigError("the model has no trainable parameters")
        cls = _optimizer_class(self.a["optimizer"])
        options = {
            "lr": self.a["learning_rate"],
            "weight_decay": self.a["weight_decay"],
            **_fused(cls, params),
        }
        decoder_lr = self.a["decoder_learning_rate"]
        if decoder_lr is None:
            return cls(params, **options)
        in_embeddings = {id(p) for p in self.model.embeddings.parameters()}
        groups = [
            {"params": [p for p in params if id(p) in in_embeddings], "lr": self.a["learning_rate"]},
            {"params": [p for p in params if id(p) not in in_embeddings], "lr": decoder_lr},
        ]
        # frozen embeddings leave the first group empty: the decoder's rate is then the only one
        groups = [group for group in groups if group["params"]]
        return cls(groups, **options)

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> Scheduler:
        kind = scheduler_kind(self.a["scheduler"])
        total_steps = self.batches_per_epoch * self.a["max_epochs"]
        if kind == "anneal":
            return AnnealOnPlateau(
                optimizer, self.a["anneal_factor"], self.a["patience"], "max" if self.use_dev else "min"
            )
        if kind == "linear":
            return LinearWarmupDecay(optimizer, total_steps, self.a["warmup_fraction"])
        if kind == "one_cycle":
            return OneCycle(optimizer, total_steps)
        return ConstantRate(optimizer)

    def _json_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.a.items():
            if key in ("callbacks", "base_path"):
                continue
            if isinstance(value, type):
                value = value.__name__
            elif isinstance(value, torch.device):
                value = str(value)
            if value is None or isinstance(value, str | int | float | bool):
                out[key] = value
        return out

    # -- the run -----------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        # Kept embeddings belong to one run: a run stopped by an exception (Ctrl-C in a
        # notebook) left them on the sentences, holding memory, and vectors found there at the
        # start were computed by someone else (a caller's own predict in mode cpu, say).
        sentences = self.train_data + self.dev_data + self.test_data
        clear_stored_embeddings(sentences, "none")
        try:
            return self._execute()
        finally:
            set_storage_mode(self.model, "none")
            clear_stored_embeddings(sentences, "none")

    def _execute(self) -> dict[str, Any]:
        a = self.a
        shuffle_seed = self._seed()
        self.model.to(self.device)
        set_storage_mode(self.model, self.storage_mode)
        optimizer = self._build_optimizer()
        scheduler = self._build_scheduler(optimizer)
        # bfloat16 has float32's exponent range, so only float16 needs loss scaling
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.scaler = scaler
        if a["use_amp"] and not self.use_amp:
            self.log("use_amp ignored: mixed precision needs a CUDA device or a CPU with native bfloat16")

        fingerprinted = a["checkpoint"] or self.trainer._resume is not None  # only they compare them
        state = TrainerState(
            epoch=0,
            best_score=None,
            best_epoch=None,
            bad_epochs=0,
            learning_rate=a["learning_rate"],
            shuffle_seed=shuffle_seed,
            train_args=self._json_args(),
            train_sentences=len(self.train_data),
            train_fingerprint=self._fingerprint(self.train_data) if fingerprinted else "",
            eval_fingerprint=self._eval_fingerprint() if fingerprinted else "",
        )
        resume = self.trainer._resume
        if resume is not None:
            state = self._resume_from(resume, optimizer, scheduler, state)
            self.trainer._resume = None
        self._write_loss_tsv(state.history)
        weights = (
            _WeightWriter(
                self.base_path / "weights.txt",
                self.model,
                state.shuffle_seed,
                done_iterations=state.epoch * self.batches_per_epoch,
            )
            if a["write_weights"]
            else None
        )

        start_epoch = state.epoch + 1
        self.log(
            f"model: {type(self.model).__name__}, {sum(p.numel() for p in self.model.parameters() if p.requires_grad)}"
            f" trainable parameters; corpus {self.corpus.name}: {len(self.train_data)} train, "
            f"{len(self.dev_data)} dev, {len(self.test_data)} test sentences"
        )
        self.log(f"device {self.device}, storage mode {self.storage_mode}, arguments {state.train_args}")
        self._emit(
            "on_train_start",
            TrainingStarted(
                max_epochs=a["max_epochs"],
                start_epoch=start_epoch,
                batches_per_epoch=self.batches_per_epoch,
                train_sentences=len(self.train_data),
                dev_sentences=len(self.dev_data) if self.use_dev else 0,
                device=str(self.device),
                test_sentences=len(self.test_data),
            ),
        )

        status = "completed"
        stop_reason = ""
        for epoch in range(start_epoch, a["max_epochs"] + 1):
            if self._rate_exhausted(scheduler):
                # a run resumed from the checkpoint of the epoch that ended it ends here too
                self.log(f"not training epoch {epoch}: the learning rate is below the minimum")
                break
            if not self._train_epoch(epoch, state, optimizer, scheduler, scaler, weights):
                status = "cancelled"
                break
            self._after_epoch(epoch, state, scheduler)
            if self._rate_exhausted(scheduler):
                stop_reason = f"learning rate {scheduler.learning_rate:.3g} below the minimum {a['min_learning_rate']:.3g}"
            if a["checkpoint"]:
                self._write_checkpoint(epoch, state, optimizer, scheduler)
            if stop_reason:
                self.log(f"stopping after epoch {epoch}: {stop_reason}")
                break
        return self._finish(status, state.epoch, state)

    def _check_finite(self, epoch: int) -> None:
        """Stop a run whose weights are NaN or infinite: every later epoch would be wasted, and
        the model it saved would predict nothing. (A float16 run's loss may overflow for a batch
        while the loss scaler keeps the weights finite: that run goes on.)"""
        broken = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if not broken:
            self.log(
                f"epoch {epoch}: the training loss is {self.epoch_train_loss}, the weights are still finite"
            )
            return
        message = (
            f"training diverged in epoch {epoch}: the training loss is {self.epoch_train_loss} and "
            f"{len(broken)} weight tensor(s) are no longer finite (first: {broken[0]}); "
            f"try a lower learning_rate than {self.a['learning_rate']:g}"
            + ("" if self.a["max_grad_norm"] else " or set max_grad_norm")
        )
        self.log(message)
        raise TrainingDiverged(message)

    def _rate_exhausted(self, scheduler: Scheduler) -> bool:
        return (
            isinstance(scheduler, AnnealOnPlateau) and scheduler.learning_rate < self.a["min_learning_rate"]
        )

    def _resume_from(
        self,
        resume: LoadedCheckpoint,
        optimizer: torch.optim.Optimizer,
        scheduler: Scheduler,
        fresh: TrainerState,
    ) -> TrainerState:
        state = resume.state
        previous = state.train_args.get("optimizer")
        current = fresh.train_args.get("optimizer")
        if previous is not None and current is not None and str(previous).lower() != str(current).lower():
            raise CheckpointError(f"the checkpoint was trained with optimizer {previous}, not {current}")
        kind = scheduler_kind(self.a["scheduler"])
        try:
            saved_kind = scheduler_kind(state.train_args.get("scheduler", self.a["scheduler"]))
        except SchedulerConfigError:  # a scheduler class of the caller's own: nothing to compare
            saved_kind = kind
        if saved_kind != kind:
            raise CheckpointError(f"the checkpoint was trained with scheduler {saved_kind}, not {kind}")
        if kind in ("linear", "one_cycle"):
            # a per-batch schedule is planned over the whole run: another length is another plan
            for name in ("max_epochs", "mini_batch_size"):
                saved = state.train_args.get(name)
                if saved is not None and saved != self.a[name]:
                    raise CheckpointError(
                        f"the checkpoint's {kind} schedule was planned for {name}={saved}, not {self.a[name]}: "
                        f"resume with {name}={saved}, or start a new run to train longer"
                    )
        if state.train_sentences and state.train_sentences != len(self.train_data):
            raise CheckpointError(
                f"the checkpoint was trained on {state.train_sentences} sentences, this corpus has "
                f"{len(self.train_data)}: resume with the same corpus"
            )
        if state.train_fingerprint and state.train_fingerprint != fresh.train_fingerprint:
            raise CheckpointError(
                "the checkpoint was trained on other sentences or labels than this corpus's "
                f"{len(self.train_data)}: resume with the same corpus"
            )
        if state.eval_fingerprint and state.eval_fingerprint != fresh.eval_fingerprint:
            raise CheckpointError(
                "the checkpoint's run was scored on other dev or test sentences or labels than this "
                f"corpus's {len(self.dev_data)} dev and {len(self.test_data)} test: resume with the same corpus"
            )
        saved_groups = len(resume.optimizer_state.get("param_groups", []))
        if saved_groups != len(optimizer.param_groups):
            raise CheckpointError(
                f"the checkpoint's optimizer has {saved_groups} parameter group(s), this run has "
                f"{len(optimizer.param_groups)}: resume with the same decoder_learning_rate setting"
            )
        optimizer.load_state_dict(resume.optimizer_state)
        scheduler.load_state_dict(resume.scheduler_state)
        if self.scaler is not None and resume.scaler_state:
            # the loss scale the run had reached; a fresh scaler would skip steps finding it again
            self.scaler.load_state_dict(resume.scaler_state)
        restore_rng(resume.rng_tensors, resume.rng_json)
        # Model selection continues from the checkpoint's best model.
        best_target = self.base_path / "best-model"
        if state.best_epoch is not None and not self.a["use_final_model_for_eval"]:
            if resume.best_model_dir is not None:
                shutil.rmtree(best_target, ignore_errors=True)
                shutil.copytree(resume.best_model_dir, best_target)
            elif state.best_epoch == state.epoch:
                self.model.save(best_target)
        state.train_args = fresh.train_args
        # the folder by name: in a worker it is a temporary path, and users read this log
        self.log(f"resuming from checkpoint {resume.path.name!r} after epoch {state.epoch}")
        return state

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _stop_words(self) -> str:
        """What the log calls a stop: "cancelled", unless a callback gave another reason."""
        reasons = [c.stop_reason for c in self.callbacks if c.stop_reason not in (None, "cancelled")]
        return f"stopped ({reasons[0].replace('_', ' ')})" if reasons else "cancelled"

    def _should_stop(self) -> bool:
        # Every callback is asked (no short-circuit), so each can record why the run stops.
        answers = [callback.should_stop() for callback in self.callbacks]
        return any(answers)

    def _epoch_batches(self, epoch: int, seed: int) -> list[list[int]]:
        """The epoch's mini-batches as indices into the training data, a pure function of
        (seed, epoch) so that a resumed run trains on exactly the same batches.

        With length bucketing the shuffled sentences are cut into pools of ``BUCKET_POOL``
        batches, each pool is sorted by length and cut into batches, and the batches are shuffled:
        batches of similar lengths waste little time on padding (RNN steps, CRF steps) while the
        order still changes every epoch."""
        size = self.a["mini_batch_size"]
        n = len(self.train_data)
        if not self.a["shuffle"]:
            return [list(range(i, min(i + size, n))) for i in range(0, n, size)]
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=generator).tolist()
        if not self.a["length_bucketing"]:
            return [order[i : i + size] for i in range(0, n, size)]
        lengths = [len(s) for s in self.train_data]
        pool = size * BUCKET_POOL
        batches: list[list[int]] = []
        for start in range(0, n, pool):
            members = sorted(order[start : start + pool], key=lengths.__getitem__)
            batches.extend(members[i : i + size] for i in range(0, len(members), size))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def _train_epoch(
        self,
        epoch: int,
        state: TrainerState,
        optimizer: torch.optim.Optimizer,
        scheduler: Scheduler,
        scaler: Any,
        weights: _WeightWriter | None,
    ) -> bool:
        """One pass over the training data; False when a callback cancelled it."""
        a = self.a
        self.model.train()
        batches = self._epoch_batches(epoch, state.shuffle_seed)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        weight_every = max(1, self.batches_per_epoch // 10)
        # as the tutorial's log does: a line every tenth of an epoch, so a long epoch is followed
        log_every = max(1, self.batches_per_epoch // 10)
        started = time.perf_counter()
        epoch_loss = 0.0
        epoch_count = 0
        sentences_seen = 0
        tokens_seen = 0
        lr = scheduler.learning_rate  # an epoch has a batch at least; this is for the checker
        self.epoch_started = started
        for batch_no in range(1, self.batches_per_epoch + 1):
            if self._should_stop():
                self.log(
                    f"{self._stop_words()} in epoch {epoch} before batch {batch_no}: the partial epoch is dropped"
                )
                return False
            batch = [self.train_data[i] for i in batches[batch_no - 1]]
            optimizer.zero_grad(set_to_none=True)
            batch_loss = 0.0
            batch_count = 0
            for chunk in _chunks(batch, a["mini_batch_chunk_size"]):
                autocast = (
                    torch.autocast(self.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None
                    else nullcontext()
                )
                with autocast:
                    loss, count = self.model.forward_loss(list(chunk))
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                batch_loss += float(loss.detach())
                batch_count += int(count)
            if scaler is not None:
                scaler.unscale_(optimizer)
            # Each chunk backpropagated its summed loss, so the accumulated gradient is the whole
            # batch's summed-loss gradient, whatever the chunking; "mean" divides it by the count.
            if a["loss_reduction"] == "mean" and batch_count > 1:
                scale = 1.0 / batch_count
                grads = [p.grad for p in params if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, scale)
            if a["max_grad_norm"] is not None:
                nn.utils.clip_grad_norm_(params, a["max_grad_norm"])
            lr = scheduler.learning_rate
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if scheduler.per_batch:
                scheduler.step_batch()
            clear_stored_embeddings(batch, self.storage_mode)

            epoch_loss += batch_loss
            epoch_count += batch_count
            sentences_seen += len(batch)
            tokens_seen += sum(len(s) for s in batch)
            if weights is not None and (batch_no % weight_every == 0 or batch_no == self.batches_per_epoch):
                weights.write((epoch - 1) * self.batches_per_epoch + batch_no, self.model)
            elapsed = max(time.perf_counter() - started, 1e-9)
            self._emit(
                "on_batch_end",
                BatchEnded(
                    epoch=epoch,
                    batch=batch_no,
                    batches_per_epoch=self.batches_per_epoch,
                    loss=batch_loss / max(batch_count, 1),
                    learning_rate=lr,
                    sentences_per_s=sentences_seen / elapsed,
                    tokens_per_s=tokens_seen / elapsed,
                    epoch_loss=epoch_loss / max(epoch_count, 1),
                ),
            )
            if batch_no % log_every == 0:
                self.log(
                    f"epoch {epoch} - batch {batch_no}/{self.batches_per_epoch} - loss "
                    f"{epoch_loss / max(epoch_count, 1):.5f} - lr {lr:.4g} - {sentences_seen / elapsed:.0f} sentences/s"
                )
        self.epoch_train_loss = epoch_loss / max(epoch_count, 1)
        self.epoch_lr = scheduler.learning_rate if not scheduler.per_batch else lr
        self.epoch_train_seconds = time.perf_counter() - started
        self.epoch_tokens = tokens_seen
        return True

    def _evaluate(self, sentences: list[Sentence], out_path: Path | None = None) -> Any:
        self.model.eval()
        with torch.no_grad():
            result = self.model.evaluate(
                sentences,
                gold_label_type=getattr(self.model, "label_type", None),
                mini_batch_size=self.a["eval_batch_size"],
                out_path=out_path,
                embedding_storage_mode=self.storage_mode,
            )
        self.model.train()
        return result

    def _after_epoch(self, epoch: int, state: TrainerState, scheduler: Scheduler) -> None:
        """Evaluate, select the best model, anneal, log, tell the callbacks."""
        a = self.a
        train_loss = self.epoch_train_loss
        if not math.isfinite(train_loss):
            self._check_finite(epoch)
        dev_loss: float | None = None
        dev_scores: dict[str, float] | None = None
        test_scores: dict[str, float] | None = None
        if self.use_dev:
            result = self._evaluate(self.dev_data)
            dev_scores = _scores(result)
            dev_loss = None if result.loss is None else float(result.loss)
        if self.monitor_test:
            result = self._evaluate(self.test_data)
            test_scores = _scores(result)
            test_scores["loss"] = float(result.loss) if result.loss is not None else math.nan

        value = dev_scores["main_score"] if dev_scores is not None else train_loss
        # A NaN (a float16 batch whose loss overflowed while the scaler kept the weights finite)
        # is never the best: every comparison with it is False, so a NaN first epoch stayed the
        # best model for the rest of the run, and the final test used its weights.
        improved = not math.isnan(value) and (
            state.best_score is None
            or (value > state.best_score if self.use_dev else value < state.best_score)
        )
        if improved:
            state.best_score = value
            state.best_epoch = epoch
            if not a["use_final_model_for_eval"]:
                self.model.save(self.base_path / "best-model")

        lr_used = self.epoch_lr
        annealed = scheduler.step_epoch(value)
        if isinstance(scheduler, AnnealOnPlateau):
            bad_epochs = scheduler.bad_epochs
            if annealed:
                self.log(
                    f"epoch {epoch}: no improvement for more than {a['patience']} epochs, learning rate "
                    f"{lr_used:.4g} -> {scheduler.learning_rate:.4g}"
                )
                if a["anneal_with_restarts"] and (self.base_path / "best-model").is_dir():
                    self._load_weights(self.base_path / "best-model")
                    self.log("restarted from the best model")
        else:
            bad_epochs = 0 if improved else epoch - (state.best_epoch or 0)
        state.epoch = epoch
        state.bad_epochs = bad_epochs
        state.learning_rate = scheduler.learning_rate

        row: dict[str, Any] = {
            "EPOCH": epoch,
            "TIMESTAMP": datetime.now(UTC).strftime("%H:%M:%S"),
            "BAD_EPOCHS": bad_epochs,
            "LEARNING_RATE": lr_used,
            "TRAIN_LOSS": train_loss,
            "DEV_MAIN_SCORE": None if dev_scores is None else dev_scores.get("main_score"),
        }
        for split, loss, scores in (("DEV", dev_loss, dev_scores), ("TEST", None, test_scores)):
            if f"{split}_LOSS" not in self.columns:
                continue
            row[f"{split}_LOSS"] = loss if split == "DEV" else (scores or {}).get("loss")
            for name, key in SCORE_KEYS:
                row[f"{split}_{name}"] = (scores or {}).get(key)
        state.history.append(row)
        self._append_loss_row(row)
        seconds = time.perf_counter() - self.epoch_started
        self.log(
            f"epoch {epoch}: train loss {train_loss:.5f}, lr {lr_used:.4g}, "
            f"{self.epoch_tokens / max(self.epoch_train_seconds, 1e-9):.0f} tokens/s"
            + (
                f", dev loss {dev_loss:.5f}, dev score {dev_scores['main_score']:.5f}"
                if dev_scores and dev_loss is not None
                else ""
            )
            + (" (best)" if improved else "")
            + f", bad epochs {bad_epochs}, {seconds:.1f} s"
        )
        self._emit(
            "on_epoch_end",
            EpochEnded(
                epoch=epoch,
                train_loss=train_loss,
                dev_loss=dev_loss,
                dev_scores=dev_scores,
                test_scores=test_scores,
                learning_rate=lr_used,
                is_best=improved,
                bad_epochs=bad_epochs,
                seconds=seconds,
            ),
        )

    def _load_weights(self, folder: Path) -> None:
        """Put the weights saved in a model folder into the model being trained (same class and
        shapes by construction), without rebuilding embeddings."""
        from engine.serialization import WEIGHTS_FILE, check_state_dict, load_tensors

        path = folder / WEIGHTS_FILE
        tensors = load_tensors(path)
        check_state_dict(path, self.model.state_dict(), tensors)
        self.model.load_state_dict(tensors, strict=True)

    def _write_checkpoint(
        self, epoch: int, state: TrainerState, optimizer: torch.optim.Optimizer, scheduler: Scheduler
    ) -> None:
        best_dir = self.base_path / "best-model"
        copy_best = (
            state.best_epoch is not None
            and state.best_epoch != epoch
            and not self.a["use_final_model_for_eval"]
            and best_dir.is_dir()
        )
        path = write_checkpoint(
            self.base_path / "checkpoint",
            self.model,
            optimizer.state_dict(),
            scheduler.state_dict(),
            state,
            best_dir if copy_best else None,
            self.scaler.state_dict() if self.scaler is not None else None,
        )
        # relative: the log sits beside it, and a worker's temporary folder means nothing to a reader
        self.log(f"checkpoint after epoch {epoch} written to {Path(path).relative_to(self.base_path)}/")
        self._emit("on_checkpoint", path, epoch)

    # -- loss.tsv ----------------------------------------------------------------------------------
    def _write_loss_tsv(self, history: list[dict[str, Any]]) -> None:
        with open(self.base_path / "loss.tsv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(self.columns)
            for row in history:
                writer.writerow([_fmt(row.get(c)) for c in self.columns])

    def _append_loss_row(self, row: dict[str, Any]) -> None:
        with open(self.base_path / "loss.tsv", "a", encoding="utf-8", newline="") as handle:
            csv.writer(handle, delimiter="\t", lineterminator="\n").writerow(
                [_fmt(row.get(c)) for c in self.columns]
            )

    # -- the end -----------------------------------------------------------------------------------
    def _finish(self, status: str, epochs_done: int, state: TrainerState) -> dict[str, Any]:
        a = self.a
        test_scores: dict[str, float] | None = None
        test_details: dict[str, Any] | None = None
        model_path: Path | None = None
        if status == "completed":
            if a["save_final_model"]:
                self.model.save(self.base_path / "final-model")
            best_dir = self.base_path / "best-model"
            # without a best epoch (every monitored value NaN) a best-model/ is an older run's
            if not a["use_final_model_for_eval"] and state.best_epoch is not None and best_dir.is_dir():
                self._load_weights(best_dir)
                model_path = best_dir
            elif a["save_final_model"]:
                model_path = self.base_path / "final-model"
            if self.test_data:
                result = self._evaluate(self.test_data, out_path=self.base_path / "test.tsv")
                test_scores = _scores(result)
                test_details = {**result.to_full_dict(), **test_scores}
                self.log(f"test ({'best' if model_path == best_dir else 'final'} model): {test_scores}")
                self.log(result.report())
        ended_as = status if status != "cancelled" else self._stop_words()
        self.log(f"training {ended_as} after {epochs_done} epochs")
        ended = TrainingEnded(
            status=status,
            epochs_done=epochs_done,
            best_dev_score=state.best_score if self.use_dev else None,
            test_scores=test_scores,
            model_path=model_path,
            test_details=test_details,
        )
        self._emit("on_train_end", ended)
        history = state.history
        return {
            "status": status,
            "epochs_done": epochs_done,
            "best_dev_score": ended.best_dev_score,
            "best_epoch": state.best_epoch,
            "test_scores": test_scores,
            "test_score": None if test_scores is None else test_scores.get("main_score"),
            "test_details": test_details,
            "model_path": model_path,
            "train_loss_history": [r["TRAIN_LOSS"] for r in history],
            "dev_loss_history": [r.get("DEV_LOSS") for r in history],
            "dev_score_history": [r.get("DEV_MAIN_SCORE") for r in history],
        }


__all__ = ["ModelTrainer", "TrainerConfigError", "loss_columns", "resolve_device"]
