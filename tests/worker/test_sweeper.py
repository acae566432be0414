"""The scheduled storage sweep, in real worker processes: one worker per interval removes what no
row points to once it is old enough; what a row points to stays, however old."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.worker.conftest import Stack

# The sweep keeps anything younger than this (a write in progress); 3 s keeps the test short.
SWEEP = {"TAGSMITH_STORAGE_SWEEP_HOURS": "24", "TAGSMITH_STORAGE_SWEEP_MIN_AGE_MINUTES": "0.05"}


def test_one_worker_sweeps_leftovers_once_per_interval(stack: Stack) -> None:
    from service.storage import get_storage

    storage = get_storage()
    corpus = stack.upload_tagger_corpus()
    # What a worker killed between storing a model and committing its row leaves behind.
    storage.put("models/orphan/config.json", b"{}")
    time.sleep(3.5)

    first = stack.start_worker("sweeper", **SWEEP)
    stack.wait_for("the leftover to be swept", lambda: not storage.exists("models/orphan"), timeout=30)
    assert storage.exists(f"corpora/{corpus}/train.txt")  # a corpus row points to it
    stack.wait_for("the sweep's log line", lambda: "storage sweep: removed 1 leftover(s)" in first.log())

    # The interval's key is taken: another worker, and the first one's next passes, leave a new
    # leftover alone until the interval is over.
    storage.put("models/later/config.json", b"{}")
    time.sleep(3.5)
    second = stack.start_worker("other", **SWEEP)
    time.sleep(3)  # several reaper passes of both (every second in these tests)
    assert storage.exists("models/later/config.json")
    assert "storage sweep" not in second.log()


def test_the_sweep_can_be_left_to_the_operator(stack: Stack) -> None:
    from service.storage import get_storage

    storage = get_storage()
    storage.put("models/orphan/config.json", b"{}")
    time.sleep(3.5)
    worker = stack.start_worker("manual", **{**SWEEP, "TAGSMITH_STORAGE_SWEEP_HOURS": "0"})
    time.sleep(3)
    assert storage.exists("models/orphan/config.json")
    assert "storage sweep" not in worker.log()


def test_a_long_sweep_does_not_hold_up_the_reaper(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listing a large storage takes minutes; meanwhile the worker must go on announcing its
    # queue and sending lost jobs again.
    import worker.reaper as reaper_module
    import worker.sweeper as sweeper_module
    from service.queue_consumers import has_consumer
    from worker.celery_app import app

    sweeping, release = threading.Event(), threading.Event()

    def slow_sweep(min_age_seconds: float) -> list[Any]:
        sweeping.set()
        release.wait(30)
        return []

    passes: list[float] = []
    monkeypatch.setattr(sweeper_module, "clean_storage", slow_sweep)
    monkeypatch.setattr(reaper_module, "reap_once", lambda celery: passes.append(time.monotonic()) or [])
    reaper = reaper_module.Reaper(app, interval=0.1, queues=["cpu"])
    reaper.start()
    try:
        assert sweeping.wait(10), "the sweep did not start"
        # the sweep is held until `release`: five passes (0.5 s at 0.1 s) must come meanwhile
        started = len(passes)
        deadline = time.monotonic() + 10
        while len(passes) - started < 5:
            assert time.monotonic() < deadline, "the reaper stopped while the storage sweep ran"
            time.sleep(0.05)
        with app.connection_for_read() as connection:
            assert has_consumer(connection.default_channel.client, "cpu")
    finally:
        release.set()
        reaper.stopped.set()
        reaper.join(10)
