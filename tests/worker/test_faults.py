"""Exactly-once training under faults, with real worker processes and a real Redis.

Each job trains a tiny tagger; ``SLOW_BATCHES`` (the test-only ``TAGSMITH_TEST_BATCH_SLEEP_SECONDS``)
stretches its batches so that a kill, a redelivery or a cancel lands inside a known epoch.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.worker.conftest import SHORT_LEASE, SLOW_BATCHES, Stack, tagger_spec
from worker.tasks import RUN_DIR, SCRATCH_KIND

pytestmark = pytest.mark.postgres


def claims_in_logs(stack: Stack, job_id: str) -> int:
    return len(re.findall(rf"job {job_id}: claimed", stack.worker_logs()))


def training_log(stack: Stack, job_id: str) -> str:
    response = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert response.status_code == 200, response.text
    return response.text


def test_a_worker_killed_in_epoch_two_is_resumed_by_another(stack: Stack) -> None:
    corpus = stack.upload_tagger_corpus(repeat=2)
    first = stack.start_worker("doomed", **SLOW_BATCHES, **SHORT_LEASE)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=4))
    stack.wait_inside_epoch_two(job_id)
    scratch = Path(tempfile.gettempdir()) / f"tagsmith-{SCRATCH_KIND}-{os.getuid()}"
    left = list(scratch.glob(f"*/job-{job_id[:8]}-*"))
    assert len(left) == 1 and (left[0] / RUN_DIR / "checkpoint").is_dir()
    first.kill()
    assert stack.job(job_id).status == "running"

    stack.start_worker("rescuer", **SLOW_BATCHES)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    # the killed run's working folder (its corpus copy and checkpoints) went with the next run,
    # and the next run's own goes as it ends (just after the job's row says completed)
    assert not left[0].exists()
    stack.wait_for(
        "the run's working folder to go", lambda: not list(scratch.glob(f"*/job-{job_id[:8]}-*")), 10
    )
    assert stack.epochs(job_id) == [1, 2, 3, 4]
    assert job.epoch == job.max_epochs == 4
    assert job.attempts == 2
    assert job.model_id is not None
    assert "resuming from" in stack.workers[-1].log()
    # the worker's log names the job on the trainer's lines; the job's own training.log does not
    assert f"job {job_id}: epoch 2: train loss" in stack.workers[-1].log()
    # the log goes on from the epoch-1 checkpoint: nothing of the lost epoch 2, nothing twice
    log = training_log(stack, job_id)
    assert [log.count(f"epoch {n}: train loss") for n in (1, 2, 3, 4)] == [1, 1, 1, 1], log
    assert log.index("epoch 1: train loss") < log.index("resuming from") < log.index("epoch 2: train loss")
    assert "resuming from checkpoint 'resume-checkpoint' after epoch 1" in log
    assert f"tagsmith-{SCRATCH_KIND}" not in log  # the worker's temporary folders are not the user's business
    assert f"job {job_id}:" not in log


def test_a_redelivered_message_does_not_start_a_second_run(stack: Stack) -> None:
    # The broker hands the unacknowledged message out again after 2 s; the job runs much longer,
    # inside the suite's 30 s lease.
    fast_redelivery = {"TAGSMITH_TEST_BATCH_SLEEP_SECONDS": "0.4", "TAGSMITH_VISIBILITY_TIMEOUT_SECONDS": "2"}
    corpus = stack.upload_tagger_corpus(repeat=2)
    stack.start_worker("first", **fast_redelivery)
    stack.start_worker("second", **fast_redelivery)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=4))  # about 7 s of training
    stack.wait_for(
        "the redelivery to be dropped",
        lambda: f"job {job_id}: delivery dropped (leased)" in stack.worker_logs(),
    )
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert job.attempts == 1
    assert claims_in_logs(stack, job_id) == 1
    assert stack.epochs(job_id) == [1, 2, 3, 4]


def test_cancel_stops_within_seconds_and_resume_finishes_the_epochs(stack: Stack) -> None:
    corpus = stack.upload_tagger_corpus(repeat=6)  # 12 batches an epoch: the cancel lands inside one
    stack.start_worker("only", **SLOW_BATCHES)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=4))
    stack.wait_inside_epoch_two(job_id)
    response = stack.client.post(f"/jobs/{job_id}/cancel", headers=stack.headers)
    assert response.status_code in (200, 202), response.text
    stack.wait_for("the cancel", lambda: stack.job(job_id).status == "cancelled", timeout=5.0)
    cancelled = stack.job(job_id)
    assert cancelled.checkpoint_key is not None
    done_before = stack.epochs(job_id)
    assert done_before and done_before == list(range(1, len(done_before) + 1)) and len(done_before) < 4
    assert "cancelled in epoch 2" in training_log(stack, job_id)
    # The partial epoch is dropped: the job shows the completed epoch it resumes from, with that
    # epoch's loss (it showed the dropped epoch's batch, percent and running loss).
    metrics = stack.client.get(f"/jobs/{job_id}/metrics", headers=stack.headers).json()
    last = next(row for row in metrics["epochs"] if row["epoch"] == done_before[-1])
    assert (cancelled.epoch, cancelled.batch) == (done_before[-1], 0)
    assert cancelled.percent == pytest.approx(100.0 * done_before[-1] / 4)
    assert (cancelled.train_loss, cancelled.learning_rate) == (last["train_loss"], last["learning_rate"])

    response = stack.client.post(f"/jobs/{job_id}/resume", headers=stack.headers)
    assert response.status_code in (200, 202), response.text
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.epochs(job_id) == [1, 2, 3, 4]
    assert job.epoch == 4
    log = training_log(stack, job_id)
    assert log.index("cancelled in epoch") < log.index("resuming from") < log.index("epoch 4: train loss")
    assert [log.count(f"epoch {n}: train loss") for n in (1, 2, 3, 4)] == [1, 1, 1, 1], log


def test_a_checkpoint_missing_from_storage_fails_the_resume_and_the_next_starts_over(stack: Stack) -> None:
    # It failed with "FileNotFoundError: jobs/<id>/checkpoints/..." at every resume, for good.
    from service.storage import get_storage

    corpus = stack.upload_tagger_corpus(repeat=2)
    stack.start_worker("only", **SLOW_BATCHES)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=3))
    stack.wait_inside_epoch_two(job_id)
    assert stack.client.post(f"/jobs/{job_id}/cancel", headers=stack.headers).status_code in (200, 202)
    stack.wait_for("the cancel", lambda: stack.job(job_id).status == "cancelled", timeout=5.0)
    checkpoint = stack.job(job_id).checkpoint_key
    get_storage().delete(checkpoint)

    assert stack.client.post(f"/jobs/{job_id}/resume", headers=stack.headers).status_code in (200, 202)
    job = stack.wait_finished(job_id)
    assert job.status == "failed" and job.checkpoint_key is None
    epoch = int(re.search(r"epoch-(\d+)", checkpoint).group(1))  # type: ignore[union-attr]
    assert job.error == (
        f"the checkpoint to resume from (after epoch {epoch}) is missing from storage; "
        "resume the job to train it again from the start"
    )
    assert stack.client.post(f"/jobs/{job_id}/resume", headers=stack.headers).status_code in (200, 202)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.epochs(job_id) == [1, 2, 3]


def test_two_workers_four_jobs_each_job_runs_once(stack: Stack) -> None:
    corpus = stack.upload_tagger_corpus()
    stack.start_worker("left")
    stack.start_worker("right")
    jobs = [stack.submit(tagger_spec(corpus, max_epochs=2)) for _ in range(4)]
    for job_id in jobs:
        job = stack.wait_finished(job_id)
        assert job.status == "completed", (job.error, stack.worker_logs())
        assert job.attempts == 1
        assert claims_in_logs(stack, job_id) == 1
        assert stack.epochs(job_id) == [1, 2]
    # Both workers trained: the queue was shared, not drained by one.
    assert all("claimed" in w.log() for w in stack.workers), stack.worker_logs()


@pytest.mark.parametrize("whom", ["process group", "main process"])
def test_a_stopping_worker_hands_its_job_back_at_once(stack: Stack, whom: str) -> None:
    corpus = stack.upload_tagger_corpus(repeat=2)
    leaving = stack.start_worker("leaving", **SLOW_BATCHES)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=4))
    stack.wait_inside_epoch_two(job_id)
    # SIGTERM, a warm shutdown: systemd signals the whole group, `docker stop` the main process only.
    if whom == "process group":
        leaving.terminate()
    else:
        os.kill(leaving.process.pid, signal.SIGTERM)
    stack.wait_for("the job back in the queue", lambda: stack.job(job_id).status == "queued", timeout=10.0)
    leaving.process.wait(timeout=30)

    stack.start_worker("staying", **SLOW_BATCHES)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.epochs(job_id) == [1, 2, 3, 4]
    assert job.attempts == 2
    assert "sent back to the queue" in leaving.log()
    assert "reaper" not in stack.workers[-1].log(), "the job waited for its lease to expire"
    # nobody cancelled it: the log says why the run stopped
    log = training_log(stack, job_id)
    assert "stopped (shutdown) in epoch 2 before batch" in log and "cancelled" not in log, log


def _cramped(tmpdir: Path, size: str) -> list[str]:
    """Runs a command with a ``size`` tmpfs on ``tmpdir`` that only it sees (a mount namespace of
    its own: nothing is left mounted when it ends)."""
    return [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"', "sh", size, str(tmpdir),
    ]  # fmt: skip


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs unshare and mount (root) for a small disk")
@pytest.mark.parametrize(
    "size",
    [
        pytest.param("16k", id="no-room-for-the-scratch-folder"),
        pytest.param("64k", id="full-after-epoch-1"),
    ],
)
def test_a_worker_whose_disk_is_full_hands_the_job_back_and_another_trains_it(
    stack: Stack, tmp_path: Path, size: str
) -> None:
    corpus = stack.upload_tagger_corpus()
    tmpdir = tmp_path / "cramped-tmp"
    tmpdir.mkdir()
    cramped = stack.start_worker(
        "cramped", wrapper=_cramped(tmpdir, size), TMPDIR=str(tmpdir), TAGSMITH_STORAGE_RETRY_SECONDS="2"
    )
    job_id = stack.submit(tagger_spec(corpus, max_epochs=2))
    waiting: dict[str, str] = {}
    stack.wait_for(
        "the job to go back to the queue",
        lambda: bool(
            waiting.update(stack.api_job(job_id))
            or (waiting["status"], waiting["retry_at"] is not None) == ("queued", True)
        ),
    )
    assert re.match(
        r"the worker is out of resources \(disk full\); retry 1 of 10 at [-\d]+ [:\d]+ UTC: "
        r"OSError: \[Errno 28\] No space left on device",
        waiting["error"],
    ), (waiting["error"], cramped.log())
    assert str(tmpdir) not in waiting["error"]  # the worker's folders are the operator's business
    cramped.kill()

    stack.start_worker("roomy")
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert (job.retry_at, job.error, job.storage_retries) == (None, None, 0)
    assert stack.epochs(job_id) == [1, 2]
