"""Leases and the reaper against the real database and broker (no worker processes)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from service.db.models import Job, Owner, utcnow
from service.db.session import session_scope
from worker import lease

pytestmark = pytest.mark.postgres


def make_job(status: str = "queued", **values: Any) -> str:
    with session_scope() as session:
        owner = Owner(name="lease-tests")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, name="job", spec={"task": "sequence_tagging"}, status=status, **values)
        session.add(job)
        session.flush()
        return job.id


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_live_lease_keeps_others_out_until_it_expires(environment: dict[str, str]) -> None:
    job_id = make_job()
    first = lease.claim(job_id, "worker-a", lease_seconds=30)
    assert first.claimed and first.resumed_from is None
    assert job_row(job_id).status == "running"
    assert lease.claim(job_id, "worker-b", lease_seconds=30).outcome == "leased"
    assert lease.renew(job_id, "worker-a", lease_seconds=30)

    later = utcnow() + timedelta(seconds=31)
    assert lease.claim(job_id, "worker-b", lease_seconds=30, now=later).claimed
    # The old holder is fenced off: no renewal, no writes.
    assert not lease.renew(job_id, "worker-a", lease_seconds=30)
    assert not lease.update_owned(job_id, "worker-a", epoch=7)
    assert lease.update_owned(job_id, "worker-b", epoch=1)
    row = job_row(job_id)
    assert (row.lease_owner, row.epoch, row.attempts) == ("worker-b", 1, 2)


def test_concurrent_claims_grant_exactly_one(environment: dict[str, str]) -> None:
    job_id = make_job()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        outcomes.append(lease.claim(job_id, f"worker-{i}", lease_seconds=30).outcome)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["claimed"] + ["leased"] * 5
    assert job_row(job_id).attempts == 1


def test_deliveries_for_finished_missing_and_cancelled_jobs_are_dropped(environment: dict[str, str]) -> None:
    assert lease.claim(make_job("completed"), "w", 30).outcome == "finished"
    assert lease.claim("00000000-0000-0000-0000-000000000000", "w", 30).outcome == "missing"
    cancelled = make_job("queued", cancel_requested=True)
    assert lease.claim(cancelled, "w", 30).outcome == "cancelled"
    assert job_row(cancelled).status == "cancelled"


def test_a_resumed_claim_names_the_checkpoint(environment: dict[str, str]) -> None:
    job_id = make_job(checkpoint_key="jobs/x/checkpoints/epoch-0002-ab12cd34")
    assert lease.claim(job_id, "w", 30).resumed_from == "jobs/x/checkpoints/epoch-0002-ab12cd34"


def test_release_writes_the_final_state_only_for_the_holder(environment: dict[str, str]) -> None:
    job_id = make_job()
    assert lease.claim(job_id, "w", 30).claimed
    assert not lease.release(job_id, "intruder", status="failed")
    assert lease.release(job_id, "w", status="completed")
    row = job_row(job_id)
    assert (row.status, row.lease_owner, row.lease_expires_at) == ("completed", None, None)


def test_heartbeat_renews_and_notices_a_lost_lease(environment: dict[str, str]) -> None:
    job_id = make_job()
    assert lease.claim(job_id, "w", lease_seconds=5).claimed
    before = job_row(job_id).lease_expires_at
    beat = lease.Heartbeat(job_id, "w", lease_seconds=5, interval=0.1).start()
    try:
        # renewed (every 0.1 s) well before the 5 s lease runs out, however late the thread runs
        deadline = time.monotonic() + 4
        while job_row(job_id).lease_expires_at <= before:
            assert time.monotonic() < deadline, "the heartbeat did not renew the lease"
            time.sleep(0.05)
        assert lease.claim(job_id, "thief", lease_seconds=5, now=utcnow() + timedelta(seconds=10)).claimed
        assert beat.lost.wait(2.0)
    finally:
        beat.stop()


def test_reaper_sends_expired_and_lost_jobs_again(environment: dict[str, str]) -> None:
    from service.queue import enqueue_job
    from worker.celery_app import app
    from worker.reaper import job_ids_waiting_in_broker, reap_once

    past = utcnow() - timedelta(seconds=60)
    progress = {"epoch": 2, "max_epochs": 8, "batch": 57, "percent": 30.0}
    dead = {"lease_owner": "dead-worker", "lease_expires_at": past}
    expired = make_job("running", checkpoint_key="jobs/x/checkpoints/epoch-0002-run1", **dead, **progress)
    from_scratch = make_job("running", **dead, **progress)
    cancelled = make_job("running", lease_owner="dead-worker", lease_expires_at=past, cancel_requested=True)
    alive = make_job("running", lease_owner="live-worker", lease_expires_at=utcnow() + timedelta(seconds=60))
    lost = make_job("queued", updated_at=past)
    waiting = make_job("queued", updated_at=past)
    fresh = make_job("queued")
    enqueue_job(waiting, "cpu")

    sent = reap_once(app)
    assert sorted(sent) == sorted([expired, from_scratch, lost])
    assert job_ids_waiting_in_broker(app) == {expired, from_scratch, lost, waiting}
    assert job_row(expired).status == "queued" and job_row(expired).lease_owner is None
    # The next run starts from the checkpoint of epoch 2: the dead run's partial epoch is not shown.
    assert (job_row(expired).epoch, job_row(expired).batch, job_row(expired).percent) == (2, 0, 25.0)
    # without a checkpoint it starts again from the first epoch
    scratch_row = job_row(from_scratch)
    assert (scratch_row.epoch, scratch_row.batch, scratch_row.percent) == (0, 0, 0.0)
    assert job_row(cancelled).status == "cancelled"
    assert job_row(alive).status == "running"
    assert job_row(fresh).status == "queued"
    # A second pass (another worker's reaper) finds nothing left to do.
    assert reap_once(app) == []


def test_the_reaper_sends_a_job_waiting_out_a_storage_outage_at_its_retry_at(
    environment: dict[str, str],
) -> None:
    from worker.celery_app import app
    from worker.reaper import job_ids_waiting_in_broker, reap_once

    long_ago = utcnow() - timedelta(hours=1)
    # Waiting: no message on purpose, however long unchanged; it must not count as lost.
    waiting = make_job(
        "queued", updated_at=long_ago, retry_at=utcnow() + timedelta(minutes=5), storage_retries=2
    )
    due = make_job("queued", retry_at=utcnow() - timedelta(seconds=1), storage_retries=3)

    assert reap_once(app) == [due]
    assert job_ids_waiting_in_broker(app) == {due}
    assert job_row(due).retry_at is None and job_row(due).status == "queued"
    assert job_row(waiting).retry_at is not None
    assert reap_once(app) == []
    # The run that takes the job clears the wait; the count stays until a checkpoint resets it.
    assert lease.claim(due, "worker-a", lease_seconds=30).claimed
    assert (job_row(due).retry_at, job_row(due).storage_retries) == (None, 3)

    later = utcnow() + timedelta(minutes=6)
    assert reap_once(app, now=later) == [waiting]


def test_a_run_that_ends_publishes_its_files_only_while_it_holds_the_lease(
    environment: dict[str, str], tmp_path: Any
) -> None:
    # A failed run's log is what its user reads first; a run fenced off must not replace the files
    # of the run that took its job over.
    from service.storage import get_storage
    from worker.run_files import release_with_files

    storage = get_storage()
    storage.put("jobs/x/files/epoch-0001-old/training.log", b"epoch 1\n")
    job_id = make_job()
    assert lease.claim(job_id, "worker-a", lease_seconds=30).claimed
    lease.update_owned(job_id, "worker-a", files_key="jobs/x/files/epoch-0001-old")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "training.log").write_text("epoch 1\nepoch 2: out of memory\n")
    (run_dir / "model.safetensors").write_bytes(b"not a run file")

    assert not release_with_files(storage, job_id, "worker-b", "r2", "failed", run_dir, status="failed")
    assert job_row(job_id).files_key == "jobs/x/files/epoch-0001-old"
    assert storage.list(f"jobs/{job_id}/files") == []

    assert release_with_files(
        storage, job_id, "worker-a", "r1", "failed", run_dir, status="failed", error="oom"
    )
    row = job_row(job_id)
    assert (row.status, row.lease_owner, row.files_key) == ("failed", None, f"jobs/{job_id}/files/failed-r1")
    assert storage.list(row.files_key) == [f"{row.files_key}/training.log"]
    assert storage.get(f"{row.files_key}/training.log").endswith(b"out of memory\n")
    assert not storage.exists("jobs/x/files/epoch-0001-old/training.log")


def test_a_worker_that_cannot_make_its_scratch_folder_fails_the_job_and_holds_no_lease(
    environment: dict[str, str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The folder was made after the heartbeat started and outside its try: the lease was renewed
    # forever and the job stayed "running".
    import os
    import tempfile

    from worker.tasks import SCRATCH_KIND, run_job

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    (tmp_path / f"tagsmith-{SCRATCH_KIND}-{os.getuid()}").write_text("a file where the folder goes")
    job_id = make_job("queued")
    assert run_job(job_id) == "failed"
    job = job_row(job_id)
    assert job.status == "failed" and job.lease_owner is None
    assert job.error is not None and job.error.startswith("this worker cannot make its scratch folder: ")
    assert not any(t.name.startswith("lease-heartbeat") for t in threading.enumerate())


def test_a_stored_spec_this_version_refuses_fails_the_job_with_one_line(environment: dict[str, str]) -> None:
    # It failed with pydantic's multi-line report (and its documentation URL) as the job's error.
    from worker.tasks import run_job

    spec = {
        "task": "text_classification",
        "corpus": {"ids": ["c"]},
        "embeddings": [{"type": "transformer_document", "model": "/nonexistent/minilm"}],
    }
    with session_scope() as session:
        owner = Owner(name="stored-spec")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, name="old", spec=spec, status="queued")
        session.add(job)
        session.flush()
        job_id = job.id
    assert run_job(job_id) == "failed"
    error = job_row(job_id).error
    assert error is not None and "\n" not in error and "pydantic" not in error
    assert error.startswith("StoredSpecError: the job's spec, stored by an older Tagsmith, is not valid")
    assert "embeddings.0.transformer_document.model" in error


def _process_clock_off_by(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This process's clock ``seconds`` off (the audit's fault: patch every name it is read by)."""
    import worker.progress
    import worker.reaper
    import worker.tasks
    from service.db import clock, models

    off = timedelta(seconds=seconds)
    real_utcnow, real_wall = models.utcnow, clock.wall_clock
    for module in (models, lease, worker.reaper, worker.tasks, worker.progress):
        monkeypatch.setattr(module, "utcnow", lambda: real_utcnow() + off, raising=False)
    monkeypatch.setattr(clock, "wall_clock", lambda: real_wall() + off)


def test_workers_whose_clocks_differ_agree_on_a_live_lease(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker 120 s ahead saw every live lease of the others as expired: its reaper sent their
    # jobs again and took them over on every pass, until they failed after max_attempts runs. One
    # 120 s behind wrote leases the others saw as long expired.
    if not environment["TAGSMITH_DATABASE_URL"].startswith("postgresql"):
        pytest.skip("SQLite is one machine: one clock")
    from worker.celery_app import app
    from worker.reaper import job_ids_waiting_in_broker, reap_once

    healthy = make_job()
    assert lease.claim(healthy, "healthy-worker", lease_seconds=30).claimed
    assert lease.renew(healthy, "healthy-worker", lease_seconds=30)
    with monkeypatch.context() as ahead:
        _process_clock_off_by(ahead, 120)
        assert reap_once(app) == []
        assert lease.claim(healthy, "gpu-worker", lease_seconds=30).outcome == "leased"

    behind = make_job()
    with monkeypatch.context() as late:
        _process_clock_off_by(late, -120)
        assert lease.claim(behind, "late-worker", lease_seconds=30).claimed
        assert lease.renew(behind, "late-worker", lease_seconds=30)
    assert reap_once(app) == []
    assert lease.claim(behind, "healthy-worker", lease_seconds=30).outcome == "leased"

    assert job_ids_waiting_in_broker(app) == set()
    assert (job_row(healthy).lease_owner, job_row(healthy).attempts) == ("healthy-worker", 1)
    assert (job_row(behind).lease_owner, job_row(behind).attempts) == ("late-worker", 1)


def test_a_worker_warns_when_its_clock_is_off_the_databases(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not environment["TAGSMITH_DATABASE_URL"].startswith("postgresql"):
        pytest.skip("SQLite is one machine: one clock")
    from service.db.clock import warn_about_clock_skew

    assert abs(warn_about_clock_skew()) < 5
    assert "clock" not in caplog.text
    _process_clock_off_by(monkeypatch, 120)
    assert 119 < warn_about_clock_skew() < 121
    assert "this machine's clock is 120.0 s ahead of the database's" in caplog.text


def test_a_claim_the_database_cannot_answer_is_one_log_line_and_leaves_the_job_queued(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # PostgreSQL's "too many clients" raised out of the task with ~45 lines of traceback.
    from sqlalchemy.exc import OperationalError

    from worker import tasks

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("UPDATE jobs", {}, Exception("sorry, too many clients already"))

    job_id = make_job("queued")
    monkeypatch.setattr(tasks, "claim", refused)
    assert tasks.run_job(job_id) == "database_unavailable"
    assert job_row(job_id).status == "queued"
    assert any("not claimed, the database is unavailable: " in r.getMessage() for r in caplog.records)


def test_a_file_missing_from_storage_is_named_as_such() -> None:
    from worker.tasks import error_message

    assert (
        error_message(FileNotFoundError("corpora/abc/train.txt"))
        == "corpora/abc/train.txt is missing from storage"
    )
