"""Learning-rate schedules for the trainer, all with a JSON-able ``state_dict`` for checkpoints.

- ``AnnealOnPlateau``: once per epoch; multiplies the rate by ``factor`` when the monitored value
  has not improved for more than ``patience`` epochs (the tutorial's default schedule).
- ``LinearWarmupDecay``: per batch; rises linearly over the first ``warmup_fraction`` of all
  steps, then decays linearly to zero (the transformer fine-tuning schedule).
- ``OneCycle``: per batch; wraps ``torch.optim.lr_scheduler.OneCycleLR``.
- ``ConstantRate``: no schedule.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Literal

import torch
from torch.optim import Optimizer


class SchedulerConfigError(ValueError):
    """An unknown scheduler name or an invalid scheduler argument."""


class Scheduler(abc.ABC):
    per_batch: bool = False

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def learning_rate(self) -> float:
        """The first parameter group's rate (the only one, or the embeddings' when the decoder
        has a learning rate of its own)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def learning_rates(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def set_learning_rates(self, rates: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = lr

    def _restore_learning_rates(self, state: dict[str, Any]) -> None:
        # checkpoints written before per-group rates hold one "lr" for every group
        rates = state.get("lrs")
        if rates is None:
            rates = [state["lr"]] * len(self.optimizer.param_groups)
        self.set_learning_rates([float(lr) for lr in rates])

    def step_batch(self) -> None:
        """Called after every optimizer step."""
        return None

    def step_epoch(self, value: float) -> bool:
        """Called after every epoch with the monitored value; True when the rate was lowered."""
        return False

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule exactly."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class ConstantRate(Scheduler):
    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.learning_rate, "lrs": self.learning_rates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore_learning_rates(state)


class AnnealOnPlateau(Scheduler):
    """``bad_epochs`` counts epochs since the last improvement; when it exceeds ``patience`` the
    rate is multiplied by ``factor`` and the count restarts."""

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 0.5,
        patience: int = 3,
        mode: Literal["max", "min"] = "max",
    ) -> None:
        super().__init__(optimizer)
        if not 0.0 < factor < 1.0:
            raise SchedulerConfigError(f"anneal_factor must be in (0, 1), got {factor}")
        if patience < 0:
            raise SchedulerConfigError(f"patience must be >= 0, got {patience}")
        if mode not in ("max", "min"):
            raise SchedulerConfigError(f"anneal mode must be 'max' or 'min', got {mode!r}")
        self.factor = factor
        self.patience = patience
        self.mode = mode
        self.best = -math.inf if mode == "max" else math.inf
        self.bad_epochs = 0

    def is_improvement(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def step_epoch(self, value: float) -> bool:
        if self.is_improvement(value):
            self.best = value
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.set_learning_rates([lr * self.factor for lr in self.learning_rates])
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr": self.learning_rate,
            "lrs": self.learning_rates,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "mode": self.mode,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore_learning_rates(state)
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.mode = state["mode"]


class LinearWarmupDecay(Scheduler):
    per_batch = True

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1) -> None:
        super().__init__(optimizer)
        if not 0.0 <= warmup_fraction < 1.0:
            raise SchedulerConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        self.total_steps = max(1, total_steps)
        self.warmup_steps = int(warmup_fraction * self.total_steps)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))

    def _apply(self) -> None:
        factor = self.factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step_batch(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "base_lrs": self.base_lrs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()


class OneCycle(Scheduler):
    per_batch = True

    def __init__(self, optimizer: Optimizer, total_steps: int) -> None:
        """Each parameter group's peak rate is the rate it was created with."""
        super().__init__(optimizer)
        # One step more than planned so the last batch never steps past the schedule's end. Only the
        # rate cycles (as in Flair): PyTorch's default also cycles momentum, which gave SGD without
        # momentum a momentum of 0.85-0.95 and overwrote AdamW's beta1.
        self.inner = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.learning_rates, total_steps=max(2, total_steps + 1), cycle_momentum=False
        )

    def step_batch(self) -> None:
        self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


SCHEDULER_NAMES: dict[str, str] = {
    "anneal": "anneal",
    "anneal_on_plateau": "anneal",
    "annealonplateau": "anneal",
    "linear": "linear",
    "linear_warmup": "linear",
    "one_cycle": "one_cycle",
    "onecycle": "one_cycle",
    "onecyclelr": "one_cycle",
    "none": "none",
    "constant": "none",
}


def scheduler_kind(scheduler: str | type | None) -> str:
    """Normalise a scheduler given by name, by class (``OneCycleLR``, ``AnnealOnPlateau`` ...)
    or None to one of ``anneal``, ``linear``, ``one_cycle``, ``none``."""
    if scheduler is None:
        return "none"
    if isinstance(scheduler, type):
        name = scheduler.__name__
    elif isinstance(scheduler, str):
        name = scheduler
    else:
        raise SchedulerConfigError(f"scheduler must be a name or a class, got {scheduler!r}")
    key = name.strip().lower().replace("-", "_")
    kind = SCHEDULER_NAMES.get(key) or SCHEDULER_NAMES.get(key.replace("_", ""))
    if kind is None:
        if name in ("LinearWarmupDecay", "LinearSchedulerWithWarmup"):
            return "linear"
        known = ", ".join(sorted(SCHEDULER_NAMES))
        raise SchedulerConfigError(f"unknown scheduler {name!r} (known: {known}, or OneCycleLR)")
    return kind
