"""The spec's trainer section reaches ``ModelTrainer.train`` whole: an option added to the spec
but not passed on would be accepted by the API and silently ignored."""

from __future__ import annotations

import inspect

from engine.training import ModelTrainer
from service.schemas import spec as s
from worker.build import trainer_arguments

# fields that choose how the job runs rather than how the trainer trains
ROUTING_FIELDS = {"mode", "device"}


def test_every_trainer_option_of_the_spec_is_passed_to_the_trainer() -> None:
    spec = s.TrainingSpec.model_validate(
        {"corpus": {"ids": ["c"]}, "trainer": {"decoder_learning_rate": 0.001, "use_amp": True}}
    )
    arguments = trainer_arguments(spec)
    assert set(arguments) == set(s.TrainerOptions.model_fields) - ROUTING_FIELDS
    assert set(arguments) <= set(inspect.signature(ModelTrainer.train).parameters)
    assert arguments["decoder_learning_rate"] == 0.001 and arguments["use_amp"] is True
