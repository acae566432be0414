"""Hooks for ``service.corpus_reading.test_hook``: each runs in a reader process before it reads.
The only place where a reader sleeps or ends on purpose. Pickled by name (the reader imports this
module), so each is a module-level function, given its arguments with ``functools.partial``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def record_and_wait(log: Path, seconds: float) -> None:
    """Wait ``seconds``, then append this reader's start and end (``time.monotonic``, one clock
    for every process of the machine) to ``log``."""
    started = time.monotonic()
    time.sleep(seconds)
    with log.open("a") as out:
        out.write(f"{started} {time.monotonic()}\n")


def end_abruptly() -> None:
    """End as the kernel's OOM killer ends a process: no answer, no exception."""
    os.kill(os.getpid(), signal.SIGKILL)


def read_intervals(log: Path) -> list[tuple[float, float]]:
    """The (start, end) of each reader that wrote to ``log``, earliest first."""
    lines = log.read_text().split() if log.exists() else []
    numbers = [float(n) for n in lines]
    return sorted(zip(numbers[::2], numbers[1::2], strict=True))
