"""The whole service on S3 storage (a real SeaweedFS server): upload, train on a worker that is
killed after epoch 1, resume on another from the checkpoint in the bucket, fetch the run's files,
predict, delete. Nothing is written to a local storage folder."""

from __future__ import annotations

import os

import pytest

from tests.s3_server import client
from tests.worker.conftest import SHORT_LEASE, SLOW_BATCHES, Stack, tagger_spec


@pytest.fixture
def storage_settings(s3_bucket: str) -> dict[str, str]:
    return {"TAGSMITH_STORAGE_URL": f"s3://{s3_bucket}/tagsmith"}


def objects(bucket: str) -> list[str]:
    pages = client(dict(os.environ)).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_train_resume_serve_and_delete_with_s3_storage(stack: Stack, s3_bucket: str) -> None:
    corpus = stack.upload_tagger_corpus(repeat=2)
    assert objects(s3_bucket) == [
        f"tagsmith/corpora/{corpus}/{split}.txt" for split in ("dev", "test", "train")
    ]

    first = stack.start_worker("doomed", **SLOW_BATCHES, **SHORT_LEASE)
    job_id = stack.submit(tagger_spec(corpus, max_epochs=3))
    stack.wait_inside_epoch_two(job_id)
    first.kill()
    stack.start_worker("rescuer", **SLOW_BATCHES)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.epochs(job_id) == [1, 2, 3] and job.attempts == 2
    assert "resuming from" in stack.workers[-1].log()

    log = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert log.status_code == 200 and "training completed after 3 epochs" in log.text

    predicted = stack.client.post(
        f"/models/{job.model_id}/predict", json={"texts": ["Anna lives in Berlin ."]}, headers=stack.headers
    )
    assert predicted.status_code == 200, predicted.text
    assert [t["text"] for t in predicted.json()["sentences"][0]["tokens"]] == [
        "Anna",
        "lives",
        "in",
        "Berlin",
        ".",
    ]

    stored = objects(s3_bucket)
    assert any(key.startswith(f"tagsmith/models/{job.model_id}/") for key in stored)
    assert any(key.startswith(f"tagsmith/jobs/{job_id}/files/") for key in stored)
    assert all(key.startswith("tagsmith/") for key in stored)
    assert not [p for p in (stack.data_dir / "storage").rglob("*") if p.is_file()]

    assert stack.client.delete(f"/models/{job.model_id}", headers=stack.headers).status_code == 204
    assert not [key for key in objects(s3_bucket) if key.startswith(f"tagsmith/models/{job.model_id}/")]
