"""The model trainer, its progress callbacks, learning-rate schedules and checkpoints."""

from engine.training.callbacks import (
    BatchEnded,
    ConsoleProgress,
    EpochEnded,
    TrainerCallback,
    TrainingEnded,
    TrainingStarted,
)
from engine.training.checkpoint import CheckpointError
from engine.training.schedulers import AnnealOnPlateau, LinearWarmupDecay, OneCycle, SchedulerConfigError
from engine.training.trainer import ModelTrainer, TrainerConfigError, TrainingDiverged, loss_columns

__all__ = [
    "AnnealOnPlateau",
    "BatchEnded",
    "CheckpointError",
    "ConsoleProgress",
    "EpochEnded",
    "LinearWarmupDecay",
    "ModelTrainer",
    "OneCycle",
    "SchedulerConfigError",
    "TrainerCallback",
    "TrainerConfigError",
    "TrainingDiverged",
    "TrainingEnded",
    "TrainingStarted",
    "loss_columns",
]
