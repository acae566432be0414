"""A storage that hangs (writes stuck in the kernel) must not hang the API: /ready names it within
seconds, /health answers at once, and a crowd of /ready calls leaves the request threadpool to
the sync endpoints. A fault-injection run once froze /jobs and /health for over 20 s this way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.service.fixtures import ApiSession

# More than AnyIO's 40 threadpool tokens: each /ready once held one while its probe hung.
CONCURRENT_READY = 45
# what /ready says of a dependency that gives no answer in its time (3 s)
NO_ANSWER = "error: no answer within 3 s"


@dataclass
class HungStorage:
    release: threading.Event = field(default_factory=threading.Event)
    probes: int = 0  # how many checks started


@pytest.fixture
def hung_storage(api: ApiSession, monkeypatch: pytest.MonkeyPatch) -> Iterator[HungStorage]:
    """The real storage, whose check blocks until ``release`` (or 15 s)."""
    from service.storage import get_storage

    storage = get_storage()
    hung = HungStorage()
    real_check = storage.check

    def hung_check() -> None:
        hung.probes += 1
        hung.release.wait(15)
        real_check()

    monkeypatch.setattr(storage, "check", hung_check)
    try:
        yield hung
    finally:
        hung.release.set()


def test_ready_names_a_hung_storage_in_time(api: ApiSession, hung_storage: HungStorage) -> None:
    began = time.monotonic()
    r = api.client.get("/ready")
    assert time.monotonic() - began < 5, "/ready waited for the hung probe"
    assert r.status_code == 503, r.text
    assert r.json() == {
        "status": "not ready",
        "checks": {
            "database": "ok",
            "broker": "error: TAGSMITH_BROKER_URL is not set",
            "storage": NO_ANSWER,
        },
    }


def test_a_hung_storage_leaves_health_and_sync_endpoints_alone(
    api: ApiSession, hung_storage: HungStorage
) -> None:
    owner = api.new_owner()
    with ThreadPoolExecutor(CONCURRENT_READY + 2) as pool:
        readies = [pool.submit(api.client.get, "/ready") for _ in range(CONCURRENT_READY)]
        try:
            deadline = time.monotonic() + 5
            while not hung_storage.probes and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # the /ready calls are all in, waiting on the storage
            health = pool.submit(api.client.get, "/health")
            listing = pool.submit(api.client.get, "/jobs", headers=owner.headers)
            try:
                assert health.result(timeout=2).status_code == 200
                assert listing.result(timeout=3).status_code == 200
            except TimeoutError:
                pytest.fail(f"/health or GET /jobs hung behind {CONCURRENT_READY} /ready calls")
            answers = [f.result(timeout=10) for f in readies]
        finally:
            hung_storage.release.set()  # else the pool's threads outlive the test
    assert {a.status_code for a in answers} == {503}
    assert {a.json()["checks"]["storage"] for a in answers} == {NO_ANSWER}
    # one probe in flight served them all, rather than a thread stuck per call
    assert hung_storage.probes == 1


def test_ready_is_ready_again_once_the_storage_answers(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.storage import get_storage

    storage = get_storage()
    release = threading.Event()
    real_check = storage.check

    def slow_check() -> None:
        release.wait(15)
        real_check()

    monkeypatch.setattr(storage, "check", slow_check)
    assert api.client.get("/ready").json()["checks"]["storage"] == NO_ANSWER
    release.set()
    # /ready itself stays 503 here (no broker is configured): wait for the storage's own answer.
    deadline = time.monotonic() + 5
    while (r := api.client.get("/ready")).json()["checks"]["storage"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.json()["checks"]["storage"] == "ok", r.text
