"""Models: the BiLSTM-CRF sequence tagger and the text classifier, and loading saved ones.

Classes are imported lazily so that ``import engine.models`` stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Model": "engine.models.base",
    "load_model": "engine.models.base",
    "register_model": "engine.models.base",
    "CRF": "engine.models.crf",
    "SequenceTagger": "engine.models.sequence_tagger",
    "TextClassifier": "engine.models.text_classifier",
    "ModelFileError": "engine.serialization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
