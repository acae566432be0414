"""training.log: the lines a run writes for people, in its base_path (appended to on resume)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path


class RunLog:
    """Appends timestamped lines to ``path`` and mirrors them to ``logger``."""

    def __init__(self, path: Path, logger: logging.Logger) -> None:
        self.path = path
        self.logger = logger

    def __call__(self, message: str) -> None:
        self.logger.info(message)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
