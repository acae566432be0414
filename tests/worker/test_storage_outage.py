"""Storage outages end to end: a real SeaweedFS server stopped and started again under a running
job and real workers. A run trains on through an outage; a job whose model cannot be stored
waits the outage out and resumes from its last stored checkpoint; past its retries it fails with
the reason; meanwhile the API answers 503 and records nothing half."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import SeaweedS3, client, create_bucket
from tests.worker.conftest import SLOW_BATCHES, Stack, tagger_spec

pytestmark = pytest.mark.postgres


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path / "seaweedfs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def storage_settings(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    # A bucket name of its own: storage instances are kept per URL, and each test has its server.
    bucket = f"outage-{uuid.uuid4().hex[:12]}"
    create_bucket(client(seaweed.env), bucket)
    return {
        "TAGSMITH_STORAGE_URL": f"s3://{bucket}/tagsmith",
        "TAGSMITH_STORAGE_RETRY_SECONDS": "1",
        # one try per request: a refused connection is an outage at once
        "AWS_MAX_ATTEMPTS": "1",
    }


def _a_job_inside_epoch_two(stack: Stack) -> str:
    """A 3-epoch job on a slow-batch worker, inside epoch 2 with the epoch-1 checkpoint stored."""
    corpus = stack.upload_tagger_corpus(repeat=2)
    stack.start_worker("steady", **SLOW_BATCHES)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=3))
    stack.wait_inside_epoch_two(job_id)
    return job_id


def test_a_job_waits_out_a_storage_outage_and_resumes_from_its_checkpoint(
    stack: Stack, seaweed: SeaweedS3
) -> None:
    job_id = _a_job_inside_epoch_two(stack)

    seaweed.stop()
    # The epoch-2 and -3 checkpoints cannot be stored, and training goes on; the model cannot
    # be stored either: the job goes back to wait, it does not fail.
    seen: list[dict[str, Any]] = []
    stack.wait_for(
        "the job to wait for storage",
        lambda: bool(
            seen.append(stack.api_job(job_id))
            or (seen[-1]["status"], bool(seen[-1]["retry_at"])) == ("queued", True)
        ),
    )
    waiting = seen[-1]
    assert re.match(
        r"storage unavailable; retry \d+ of 10 at [-\d]+ [:\d]+ UTC: storage s3://", waiting["error"]
    )
    assert "Could not connect to the endpoint URL" in waiting["error"]

    # Meanwhile the API says "later", not "broken".
    files = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert files.status_code == 503, files.text
    assert files.headers["Retry-After"] == "30"
    assert files.json()["type"].endswith("/storage-unavailable")
    assert "s3://" not in files.text  # where storage lives is the operator's business

    # Each retry that still finds no storage waits longer (1 s, 2 s, ...).
    stack.wait_for("a second retry", lambda: stack.job(job_id).storage_retries >= 2, timeout=60)
    seaweed.start()

    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.epochs(job_id) == [1, 2, 3]
    assert (job.retry_at, job.error) == (None, None)
    assert job.storage_retries == 0  # the checkpoints after the outage count as progress
    log = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert log.status_code == 200 and "training completed after 3 epochs" in log.text
    # That run's training.log was never stored; the resumed run's is the epoch-1 one, continued.
    assert "epoch 2's checkpoint could not be stored, training goes on" in stack.workers[0].log()
    assert "resuming from" in stack.workers[0].log()

    # A model not loaded yet cannot be fetched during an outage: 503, not where storage lives.
    seaweed.stop()
    predicted = stack.client.post(
        f"/models/{job.model_id}/predict", json={"texts": ["Anna lives in Berlin ."]}, headers=stack.headers
    )
    assert predicted.status_code == 503, predicted.text
    assert predicted.headers["Retry-After"] == "30" and "s3://" not in predicted.text


def test_an_outage_that_ends_before_the_model_is_stored_costs_no_epoch(
    stack: Stack, seaweed: SeaweedS3
) -> None:
    job_id = _a_job_inside_epoch_two(stack)
    stored = stack.job(job_id).checkpoint_key

    seaweed.stop()
    # Epochs 2 and 3 train without their checkpoints; the finished run waits to store its model.
    stack.wait_for(
        "the run to wait for storage with its model",
        lambda: "the trained model could not be stored, trying again" in stack.workers[0].log(),
    )
    during = stack.job(job_id)
    assert (during.status, during.retry_at, during.checkpoint_key) == ("running", None, stored)
    seaweed.start()

    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    # the same run finished: no retry, no epoch trained twice
    assert (job.attempts, job.storage_retries, job.error) == (1, 0, None)
    assert stack.epochs(job_id) == [1, 2, 3]
    worker_log = stack.workers[0].log()
    assert "resuming from" not in worker_log
    for epoch in (2, 3):
        assert f"epoch {epoch}'s checkpoint could not be stored, training goes on" in worker_log
    log = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert log.status_code == 200 and "epoch 2's checkpoint was not stored; training goes on" in log.text
    assert "s3://" not in log.text


def test_past_its_retries_a_job_fails_with_the_reason_and_resumes_later(
    stack: Stack, seaweed: SeaweedS3
) -> None:
    corpus = stack.upload_tagger_corpus()
    unwanted = stack.upload_classifier_corpus()
    stack.start_worker("steady", TAGSMITH_STORAGE_RETRIES="1")
    seaweed.stop()

    # A delete still deletes: the row goes, its files wait for clean-storage.
    deleted = stack.client.delete(f"/corpora/{unwanted}", headers=stack.headers)
    assert deleted.status_code == 204, deleted.text

    # Uploads answer 503 and leave nothing behind.
    upload = stack.client.post(
        "/corpora",
        data={"name": "later", "format": "fasttext"},
        files={"train": ("train.txt", b"__label__A some text\n", "text/plain")},
        headers=stack.headers,
    )
    assert upload.status_code == 503, upload.text
    assert upload.headers["Retry-After"] == "30"
    corpora = stack.client.get("/corpora", headers=stack.headers).json()["items"]
    assert [c["id"] for c in corpora] == [corpus]

    # A job cannot read its corpus: one retry, then it fails saying why.
    job_id = stack.submit(tagger_spec(corpus, max_epochs=2))
    job = stack.wait_finished(job_id, timeout=60)
    assert job.status == "failed", stack.worker_logs()
    assert re.match(
        r"gave up after 1 storage retries: storage s3://outage-\w+/tagsmith/ is unavailable", job.error
    )
    assert job.attempts == 2 and job.retry_at is None

    # Once storage is back, a resume starts a fresh count and finishes the job.
    seaweed.start()
    resumed = stack.client.post(f"/jobs/{job_id}/resume", headers=stack.headers)
    assert resumed.status_code == 202, resumed.text
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert (job.error, job.storage_retries) == (None, 0)
