"""Worker-only settings (environment variables, prefix ``TAGSMITH_``), next to the service's.

The lease length is the service's ``TAGSMITH_LEASE_SECONDS`` (the API reads it too); what only
the worker and its Celery app need lives here. ``get_worker_settings()`` caches;
``reset_worker_settings()`` forgets (tests change the environment, then reset).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", allow_inf_nan=False)

    visibility_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        description="Redis broker visibility timeout: an unacknowledged message (its worker died) is delivered "
        "again after this long. The job lease, not this timeout, keeps a redelivery from starting a second run.",
    )
    reaper_interval_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often each worker looks for jobs to re-enqueue: `running` with an expired lease, "
        "or `queued` with no message in the broker.",
    )
    queued_lost_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A `queued` job unchanged for this long and absent from the broker's queues counts as "
        "lost (e.g. Redis restarted without persistence) and is sent again.",
    )
    progress_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Least time between two progress writes (job row + buffered batch losses) of a training run.",
    )
    cancel_check_interval_seconds: float = Field(
        default=0.5, gt=0, description="Least time between two reads of a running job's cancel flag."
    )
    max_attempts: int = Field(
        default=20,
        ge=1,
        description="Most runs (claims) of one job, cancel/resume cycles included. Bounds the resumes of a job "
        "whose process dies every time without an exception (the kernel's OOM killer); past it the job fails.",
    )
    storage_retries: int = Field(
        default=10,
        ge=0,
        description="Times in a row a job whose run could not reach storage (connection refused or timed out, "
        "an overloaded S3, a network filesystem gone), or whose worker ran out of disk space or file descriptors, "
        "goes back to the queue to be retried, before it fails. "
        "A checkpoint written counts as progress and starts the count again; 0 fails at once.",
    )
    storage_retry_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Wait before the first such retry; each further one waits twice as long, at most 15 minutes "
        "(the defaults ride out an outage of about 1.5 hours). Also how often a finished run tries again to "
        "store its model, ten times at most, before its job goes back to the queue.",
    )
    storage_sweep_hours: float = Field(
        default=24.0,
        ge=0,
        description="How often one of the workers removes storage no corpus, model or job points to and that "
        "has not changed for `storage_sweep_min_age_minutes` (what `tagsmith clean-storage` does); 0 leaves it "
        "to you.",
    )
    storage_sweep_min_age_minutes: float = Field(
        default=60.0,
        gt=0,
        description="The scheduled sweep keeps anything written more recently than this: a write in progress "
        "(files stored, row not yet committed). Keep it well above your longest upload.",
    )
    worker_concurrency: int = Field(
        default=1, ge=1, description="Training processes per worker (`celery worker -c` overrides it)."
    )
    worker_jobs_per_process: int = Field(
        default=10,
        ge=1,
        description="A training process is replaced by a fresh one after this many jobs: what a run leaves "
        "in the process (allocator fragments, caches; +1.9 MB a GloVe job, measured) never piles up.",
    )
    test_batch_sleep_seconds: float = Field(
        default=0.0,
        ge=0,
        description="TEST ONLY: sleep this long after every training batch, so that fault-injection tests "
        "can hit a run at a known point. Leave 0 in production.",
    )


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()


def reset_worker_settings() -> None:
    get_worker_settings.cache_clear()
