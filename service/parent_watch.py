"""Processes that ``tagsmith up`` starts stop when it is gone, however it ended.

They run in sessions of their own (so that ``up`` can signal each one's whole process group),
so they do not die with it: after a ``kill -9`` (or the OOM killer) of ``up``, its API and worker
ran on, and the next ``up`` on the same data folder started a second stack beside them. ``up``
names itself in ``TAGSMITH_STOP_WITH_PID``; a child then watches its parent and stops itself
(SIGTERM: the API shuts down, the worker hands its job back to the queue) once it is another.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

ENV = "TAGSMITH_STOP_WITH_PID"

log = logging.getLogger(__name__)


def stop_with_parent(interval: float = 1.0) -> threading.Thread | None:
    """Start the watch in this process when ``up`` asked for it (None: it did not)."""
    raw = os.environ.get(ENV, "")
    if not raw.isdigit():
        return None  # not started by `up`
    # Called by the API and the worker's main process only, never by the worker's pool processes
    # (which inherit the variable): their parent is the worker. A parent gone before this call
    # (an `up` killed while the worker was starting) stops this process at the first look.
    parent = int(raw)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("tagsmith up (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread
