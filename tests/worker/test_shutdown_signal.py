"""The SIGTERM handler of a training process, in a process of its own (it installs a handler,
and a handler that hangs would hang the test run with it)."""

from __future__ import annotations

import subprocess
import sys

from tests.worker.conftest import REPO

# Python runs a signal handler between any two bytecodes of the main thread, so a second SIGTERM
# can start the handler again at any point of the first run (and of whatever that run calls).
# This script sends one at every line the first run executes; a handler that takes a lock hangs
# on it, and the watchdog ends the process with exit status 3.
NESTED_SIGTERMS = """
import os, signal, sys, threading

from worker import tasks

watchdog = threading.Timer(10.0, os._exit, (3,))
watchdog.daemon = True
watchdog.start()
tasks._handle_sigterm()
tasks._RUNNING.set()  # as while a job trains
depth = 0
sent = 0

def second_sigterm_at_every_line(frame, event, arg):
    global depth, sent
    if frame.f_code is tasks.request_shutdown.__code__:
        depth += {"call": 1, "return": -1}.get(event, 0)
    if event == "line" and depth == 1:
        sent += 1
        os.kill(os.getpid(), signal.SIGTERM)
    return second_sigterm_at_every_line

sys.settrace(second_sigterm_at_every_line)
os.kill(os.getpid(), signal.SIGTERM)
sys.settrace(None)
print(f"nested={sent} shutdown={tasks.SHUTDOWN.is_set()}")
"""


def test_a_sigterm_that_interrupts_the_handler_of_another_does_not_hang_it() -> None:
    # What systemd's stop does: it signals the whole process group, and the worker's main
    # process passes the signal on to its training processes a moment later.
    done = subprocess.run(
        [sys.executable, "-c", NESTED_SIGTERMS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 3, "the SIGTERM handler hung when a second SIGTERM interrupted it"
    assert done.returncode == 0, done.stderr
    nested, shutdown = done.stdout.split()
    assert int(nested.removeprefix("nested=")) >= 2, done.stdout  # the handler and what it calls
    assert shutdown == "shutdown=True"
