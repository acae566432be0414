"""Database outages under a running job, end to end: real workers reach PostgreSQL through a TCP
proxy that the test cuts (connections dropped, new ones refused) and restores.

A short outage does not interrupt the run: it trains on with its progress buffered and waits at
the writes it needs. One longer than the lease stops the run, and the job resumes from its
checkpoint once the database is back. Neither ever shows the job as failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from tests.tcp_proxy import TcpProxy
from tests.worker.conftest import SHORT_LEASE, SLOW_BATCHES, Stack, tagger_spec

pytestmark = pytest.mark.postgres

EPOCHS = 6


@pytest.fixture
def database_proxy(environment: dict[str, str]) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of this test's database, and the database URL through it."""
    url = make_url(environment["TAGSMITH_DATABASE_URL"])
    if url.get_backend_name() != "postgresql":
        pytest.skip("a database outage needs a database server (TAGSMITH_TEST_DATABASE_URL)")
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.stop()


class StatusWatch:
    """Every status the job passes through, read directly (not through the proxy) every 50 ms."""

    def __init__(self, stack: Stack, job_id: str) -> None:
        self.stack, self.job_id = stack, job_id
        self.seen: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _look(self) -> None:
        status = self.stack.job(self.job_id).status
        if not self.seen or self.seen[-1] != status:
            self.seen.append(status)

    def _watch(self) -> None:
        while not self._done.is_set():
            self._look()
            self._done.wait(0.05)

    def stop(self) -> list[str]:
        """The statuses seen since the job was submitted, from the first run on."""
        self._done.set()
        self._thread.join()
        self._look()  # the watcher's last look may predate the end
        return self.seen[self.seen.index("running") :]


def batch_losses(job_id: str) -> list[tuple[int, int]]:
    from service.db.models import JobBatchLoss
    from service.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(
            select(JobBatchLoss.epoch, JobBatchLoss.batch, func.count())
            .where(JobBatchLoss.job_id == job_id)
            .group_by(JobBatchLoss.epoch, JobBatchLoss.batch)
            .order_by(JobBatchLoss.epoch, JobBatchLoss.batch)
        ).all()
    assert all(count == 1 for _, _, count in rows), rows  # none written twice
    return [(epoch, batch) for epoch, batch, _ in rows]


def test_a_short_database_outage_does_not_interrupt_training(
    stack: Stack, database_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, proxied_url = database_proxy
    corpus = stack.upload_tagger_corpus(repeat=2)  # 16 sentences: 4 batches an epoch
    stack.start_worker("steady", TAGSMITH_DATABASE_URL=proxied_url, **SLOW_BATCHES)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=EPOCHS))
    watch = StatusWatch(stack, job_id)
    stack.wait_inside_epoch_two(job_id)

    proxy.cut()
    time.sleep(4)  # longer than an epoch: batches train and an epoch ends while it lasts
    proxy.restore()

    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert watch.stop() == ["running", "completed"]
    log = stack.workers[0].log()
    assert "database unavailable, training goes on with progress buffered" in log
    assert "database unavailable; job" in log and "waits for it" in log
    # The same run went on: no second attempt, no epoch trained twice, no batch loss lost.
    assert job.attempts == 1, stack.worker_logs()
    assert stack.epochs(job_id) == list(range(1, EPOCHS + 1))
    assert batch_losses(job_id) == [(e, b) for e in range(1, EPOCHS + 1) for b in range(1, 5)]
    training_log = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert f"training completed after {EPOCHS} epochs" in training_log.text


def test_an_outage_longer_than_the_lease_resumes_the_job_from_its_checkpoint(
    stack: Stack, database_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, proxied_url = database_proxy
    corpus = stack.upload_tagger_corpus(repeat=2)
    stack.start_worker("steady", TAGSMITH_DATABASE_URL=proxied_url, **SHORT_LEASE, **SLOW_BATCHES)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=EPOCHS))
    watch = StatusWatch(stack, job_id)
    stack.wait_inside_epoch_two(job_id)

    proxy.cut()
    # The run gives up once the database has been away for a whole lease (5 s).
    stack.wait_for(
        "the run to give up its lease",
        lambda: "the reaper will resume" in stack.workers[0].log() or "lease lost" in stack.workers[0].log(),
        timeout=60,
    )
    proxy.restore()

    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert "failed" not in watch.stop()
    assert job.attempts == 2, stack.worker_logs()  # the reaper's resume is the second run
    assert job.error is None
    assert stack.epochs(job_id) == list(range(1, EPOCHS + 1))
    assert batch_losses(job_id) == [(e, b) for e in range(1, EPOCHS + 1) for b in range(1, 5)]
    assert "resuming from" in stack.workers[0].log()
