"""Sending training jobs to the workers: one Celery message per attempt, by task name, so the
API never imports the training code. Imported by the worker too: no FastAPI here."""

from __future__ import annotations

TRAIN_TASK = "tagsmith.train_job"
QUEUES = ("cpu", "gpu")
NO_BROKER = (
    "TAGSMITH_BROKER_URL is not set: jobs wait queued until a worker's reaper sends them "
    "(set it to the Redis the workers use; `tagsmith up` passes its own on)"
)


class NoBroker(RuntimeError):
    """This process has no broker URL to send jobs to."""


def enqueue_job(job_id: str, queue: str) -> str:
    """Send ``tagsmith.train_job(job_id)`` to ``queue``; returns the Celery task id."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r} (expected one of {', '.join(QUEUES)})")
    from service.settings import get_settings

    # Without a URL Celery falls back to amqp://localhost: an API started on its own handed job
    # messages to whatever RabbitMQ listened there, and no worker ever saw them.
    if not get_settings().broker_url:
        raise NoBroker(NO_BROKER)
    from worker.celery_app import app

    result = app.send_task(TRAIN_TASK, args=[job_id], queue=queue)
    return str(result.id)
