"""Sending training jobs to the workers: one Celery message per attempt, by task name, so the
API never imports the training code. Imported by the worker too: no FastAPI here."""

from __future__ import annotations

TRAIN_TASK = "tagsmith.train_job"
QUEUES = ("cpu", "gpu")


def enqueue_job(job_id: str, queue: str) -> str:
    """Send ``tagsmith.train_job(job_id)`` to ``queue``; returns the Celery task id."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r} (expected one of {', '.join(QUEUES)})")
    from worker.celery_app import app

    result = app.send_task(TRAIN_TASK, args=[job_id], queue=queue)
    return str(result.id)
