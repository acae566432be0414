"""The service's and the engine's log lines with a time, a level and a logger name.

Without a handler of their own they went through Python's last-resort handler: a bare message
between uvicorn's `INFO:` lines and Celery's timestamped ones, and nothing below WARNING. A
logging configuration of the operator's (any handler on the root logger) is left to decide.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NAMES = ("service", "engine")


def configure_logging() -> None:
    if logging.getLogger().handlers:
        return
    for name in _NAMES:
        logger = logging.getLogger(name)
        if any(getattr(h, "tagsmith", False) for h in logger.handlers):
            continue
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.tagsmith = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
