"""The job event stream (``GET /jobs/{job_id}/events``): server-sent events until the job ends.

It polls the database, so a database outage happens inside a response already under way, where
no 503 can be answered any more: it is ridden out instead. While the database is away the stream
sends a comment (``: database unavailable, retrying``, which SSE clients ignore and proxies see as
traffic) and polls on; once the database is back, the job's events go on from where they were,
none lost. A training job runs for hours and a database restart or failover takes seconds to a
minute or two, so the stream waits ``OUTAGE_LIMIT_S`` (5 minutes) before it gives up with an
``error`` event: past that the client learns that it is the database, not the job, that is stuck.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from anyio import to_thread

from service.db.models import FINISHED_STATUSES, Job, JobEpochMetric
from service.db.session import DatabaseUnavailable
from service.logic import jobs
from service.schemas.api import EpochMetricOut

log = logging.getLogger(__name__)

OUTAGE_LIMIT_S = 300.0
KEEPALIVE_S = 15.0  # below the idle timeouts of common proxies (nginx: 60 s)
OUTAGE_COMMENT = ": database unavailable, retrying\n\n"


def sse(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _reason(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


async def _read(owner_id: str, job_id: str) -> tuple[Job, list[JobEpochMetric]]:
    job = await to_thread.run_sync(jobs.get_job, owner_id, job_id)
    return job, await to_thread.run_sync(jobs.epoch_metrics, job_id)


async def job_event_stream(
    owner_id: str,
    job_id: str,
    render: Callable[[Job], dict[str, Any]],
    disconnected: Callable[[], Awaitable[bool]],
    poll: float,
) -> AsyncIterator[str]:
    """`progress` (``render(job)``, whenever it changes), `epoch` (each new per-epoch row) and a
    final `end`; or a final `error` when the database stays away ``OUTAGE_LIMIT_S``."""
    last: str | None = None
    epochs_sent = 0
    idle = 0.0
    outage_since: float | None = None
    while True:
        try:
            job, epochs = await _read(owner_id, job_id)
        except DatabaseUnavailable as error:
            now = time.monotonic()
            if outage_since is None:
                # one line per outage: each failed poll once logged three chained tracebacks
                log.warning(
                    "events of job %s: database unavailable (%s); polling on for up to %g s",
                    job_id,
                    _reason(error),
                    OUTAGE_LIMIT_S,
                )
                outage_since, idle = now, 0.0
                yield OUTAGE_COMMENT
            elif now - outage_since >= OUTAGE_LIMIT_S:
                log.warning(
                    "events of job %s: database unavailable for %g s, stream ended", job_id, OUTAGE_LIMIT_S
                )
                detail = f"the database has been unavailable for {OUTAGE_LIMIT_S:g} s; connect again later"
                yield sse("error", {"error": "database-unavailable", "detail": detail})
                return
            elif idle >= KEEPALIVE_S:
                yield OUTAGE_COMMENT
                idle = 0.0
        else:
            if outage_since is not None:
                log.info(
                    "events of job %s: database back after %.1f s", job_id, time.monotonic() - outage_since
                )
                outage_since = None
            for row in epochs[epochs_sent:]:
                yield sse("epoch", EpochMetricOut.model_validate(row).model_dump(mode="json"))
            epochs_sent = len(epochs)
            body = render(job)
            if job.status in FINISHED_STATUSES:
                yield sse("end", body)
                return
            snapshot = json.dumps(body, sort_keys=True)
            if snapshot != last:
                yield sse("progress", body)
                last, idle = snapshot, 0.0
            elif idle >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                idle = 0.0
        if await disconnected():
            return
        await asyncio.sleep(poll)
        idle += poll
