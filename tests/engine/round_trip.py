"""Rebuilding an embedding as a saved model does: its files, its config through JSON, its weights."""

from __future__ import annotations

import json
from pathlib import Path

from engine.embeddings import embeddings_from_config
from engine.embeddings.base import Embeddings


def rebuilt(embeddings: Embeddings, folder: Path) -> Embeddings:
    """``embeddings`` saved to ``folder`` and built again from its config and weights, in eval mode."""
    embeddings.save_resources(folder)
    config = json.loads(json.dumps(embeddings.to_config()))
    again = embeddings_from_config(config, folder)
    again.load_state_dict(embeddings.state_dict())
    return again.eval()
