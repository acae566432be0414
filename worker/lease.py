"""Job leases: at most one worker trains a job at any time.

A lease is ``jobs.lease_owner`` + ``jobs.lease_expires_at``. Every change of it is ONE conditional
UPDATE whose WHERE clause states what must hold (no lease, an expired lease, or our own), so two
workers racing for a job cannot both see ``rowcount == 1``; the database serialises them. Every
later write of a run is fenced by ``lease_owner = <our owner id>``, so a worker that lost its lease
(stalled past the expiry while another took over) can no longer change the job.

Owner ids are unique per claim attempt (host, pid, random suffix): a restarted process on the
same host is a different owner.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import or_, type_coerce, update

from service.db.clock import db_now
from service.db.models import FINISHED_STATUSES, Job, UTCDateTime
from service.db.session import DatabaseUnavailable, rows_changed, session_scope

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseLost(Exception):
    """Our lease went to another worker (or may have): this run must change nothing more."""


class LeaseLostInOutage(LeaseLost):
    """The database stayed unreachable past the lease. Whether the last write committed (its
    answer may be what was lost) is unknown: keep what it would point to for the storage sweep."""


ClaimOutcome = Literal["claimed", "missing", "finished", "leased", "cancelled"]


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    resumed_from: str | None = None  # the checkpoint key the run continues from, if any
    attempts: int = 0  # runs of this job so far, this one included

    @property
    def claimed(self) -> bool:
        return self.outcome == "claimed"


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def at_utc(moment: datetime) -> Any:
    """A bound datetime typed like the columns (UTC on every backend)."""
    return type_coerce(moment, UTCDateTime())


def claim(job_id: str, owner: str, lease_seconds: float, now: datetime | None = None) -> Claim:
    """Take the job's lease if it is runnable and nobody else holds a live lease."""
    now = now or db_now()
    with session_scope() as session:
        changed = rows_changed(
            session,
            update(Job)
            .where(
                Job.id == job_id,
                Job.status.in_(("queued", "running")),
                Job.cancel_requested.is_(False),
                or_(Job.lease_owner.is_(None), Job.lease_expires_at < at_utc(now), Job.lease_owner == owner),
            )
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                worker_host=socket.gethostname(),
                error=None,
                retry_at=None,
                finished_at=None,
            )
            .execution_options(synchronize_session=False),
        )
        if changed == 1:
            job = session.get(Job, job_id)
            assert job is not None
            if job.started_at is None:
                job.started_at = now
            return Claim("claimed", job.checkpoint_key, job.attempts)
        job = session.get(Job, job_id)
        if job is None:
            return Claim("missing")
        if job.status in FINISHED_STATUSES:
            return Claim("finished")
        lease_alive = (
            job.lease_owner is not None and job.lease_expires_at is not None and job.lease_expires_at >= now
        )
        if job.cancel_requested and not lease_alive:
            _finish_cancelled_unleased(session, job_id, now)
            return Claim("cancelled")
        return Claim("leased")


def _finish_cancelled_unleased(session: Any, job_id: str, now: datetime) -> None:
    """A cancel that arrived while no worker held the job: nobody else will end it."""
    session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(("queued", "running")),
            Job.cancel_requested.is_(True),
            or_(Job.lease_owner.is_(None), Job.lease_expires_at < at_utc(now)),
        )
        .values(
            status="cancelled", lease_owner=None, lease_expires_at=None, finished_at=now, eta_seconds=None
        )
        .execution_options(synchronize_session=False)
    )


def renew(job_id: str, owner: str, lease_seconds: float) -> bool:
    """Push our lease's expiry forward; False when the lease is no longer ours."""
    now = db_now()
    with session_scope() as session:
        changed = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
            .execution_options(synchronize_session=False),
        )
        return changed == 1


def update_owned(job_id: str, owner: str, **values: Any) -> bool:
    """Write job fields only while we hold the lease (the fencing every run write goes through)."""
    with session_scope() as session:
        return update_owned_in(session, job_id, owner, **values)


def update_owned_in(session: Any, job_id: str, owner: str, **values: Any) -> bool:
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False),
    )
    return changed == 1


def release(job_id: str, owner: str, **final_values: Any) -> bool:
    """Give the lease up, writing the run's final fields in the same conditional UPDATE."""
    return update_owned(job_id, owner, lease_owner=None, lease_expires_at=None, **final_values)


class Heartbeat:
    """Renews a lease from a daemon thread while the run trains.

    ``lost`` is set when a renewal finds the lease taken, or when the database stayed unreachable
    for a whole lease length (by then another worker may legitimately have taken over).
    """

    def __init__(self, job_id: str, owner: str, lease_seconds: float, interval: float | None = None) -> None:
        self.job_id = job_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(0.5, lease_seconds / 3)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-heartbeat-{job_id[:8]}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                if not renew(self.job_id, self.owner, self.lease_seconds):
                    log.warning("job %s: lease lost to another worker", self.job_id)
                    self.lost.set()
                    return
                last_ok = time.monotonic()
            except Exception as error:  # a flaky database must not kill the thread; the deadline decides
                if isinstance(error, DatabaseUnavailable):
                    log.warning("job %s: lease renewal failed: %s", self.job_id, first_line(error))
                else:
                    log.exception("job %s: lease renewal failed", self.job_id)
                if time.monotonic() - last_ok > self.lease_seconds:
                    self.lost.set()
                    return


def while_leased(write: Callable[[], T], lost: threading.Event, what: str, every: float = 1.0) -> T:
    """``write()``, tried again every ``every`` seconds while the database is unavailable.

    A run cannot go on without some writes (an epoch's metrics, a checkpoint's key), and a
    database restart should not cost it an epoch. It waits while the lease may still be ours:
    the heartbeat sets ``lost`` once the database stayed unreachable for a whole lease length,
    and then this raises ``LeaseLost`` (the reaper resumes the job from its last checkpoint).
    ``write`` must be safe to repeat: a commit whose answer was lost may have happened."""
    waiting_since: float | None = None
    while True:
        if lost.is_set():
            raise LeaseLost(what)
        try:
            result = write()
        except DatabaseUnavailable as error:
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.warning("database unavailable; %s waits for it: %s", what, first_line(error))
            if lost.wait(every):
                raise LeaseLostInOutage(what) from error
            continue
        if waiting_since is not None:
            log.warning("database back; %s written after %.1f s", what, time.monotonic() - waiting_since)
        return result


def first_line(error: BaseException) -> str:
    """A driver error's first line (SQLAlchemy appends the statement and a help link)."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__
