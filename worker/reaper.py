"""The reaper: finds jobs that no message will ever run again, and sends them again. Its thread
also runs the scheduled storage sweep (``worker.sweeper``).

Three cases, checked every ``reaper_interval_seconds`` by every worker:
- ``running`` with an expired lease: its worker died (or stalled) and the message it held is
  only redelivered after the broker's visibility timeout, if at all. The job goes back to
  ``queued`` and gets a new message; the next run resumes from its last checkpoint. A job whose
  cancel was requested ends ``cancelled`` instead.
- ``queued`` unchanged for ``queued_lost_seconds`` with no message waiting in the broker
  (e.g. Redis restarted without persistence): a new message.
- ``queued`` with a ``retry_at`` that has passed (its run could not reach storage): a new
  message. Until then such a job waits without one, and does not count as lost.

Several reapers may run at once (one per worker). Each change is a conditional UPDATE that only
one of them can win, and a message too many is harmless: the lease drops it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import and_, or_, select, update

from service.db.clock import db_now
from service.db.models import Job, queued_again
from service.db.session import rows_changed, session_scope
from service.queue import QUEUES, enqueue_job
from service.settings import get_settings
from worker.lease import at_utc
from worker.settings import get_worker_settings

log = logging.getLogger(__name__)

# kombu's Redis transport keeps priority sub-queues as "<queue><sep><priority>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


def _job_id_of(raw: bytes | str) -> str | None:
    """The job id in a kombu Redis message (JSON envelope, base64 JSON body ``[args, kwargs, embed]``)."""
    try:
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def job_ids_waiting_in_broker(celery: Celery, queues: tuple[str, ...] = QUEUES) -> set[str]:
    """Jobs with a message waiting in one of the queues (not those a worker already holds)."""
    found: set[str] = set()
    with celery.connection_for_read() as connection:
        client = connection.default_channel.client
        for queue in queues:
            for step in _PRIORITY_STEPS:
                name = queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}"
                for raw in client.lrange(name, 0, -1):
                    job_id = _job_id_of(raw)
                    if job_id is not None:
                        found.add(job_id)
    return found


def reap_once(celery: Celery, now: datetime | None = None) -> list[str]:
    """One pass; returns the ids of the jobs it sent again."""
    now = now or db_now()
    stale_before = now - timedelta(seconds=get_worker_settings().queued_lost_seconds)
    expired_lease = and_(
        Job.status == "running", or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < at_utc(now))
    )
    lost_message = and_(Job.status == "queued", Job.retry_at.is_(None), Job.updated_at < at_utc(stale_before))
    due_retry = and_(Job.status == "queued", Job.retry_at.is_not(None), Job.retry_at <= at_utc(now))
    with session_scope() as session:
        candidates = session.execute(
            select(Job.id, Job.status, Job.queue, Job.cancel_requested).where(
                or_(expired_lease, lost_message, due_retry)
            )
        ).all()
    if not candidates:
        return []
    waiting = job_ids_waiting_in_broker(celery)
    sent: list[str] = []
    for job_id, status, queue, cancel_requested in candidates:
        if job_id in waiting:
            continue
        with session_scope() as session:
            if status == "running" and cancel_requested:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, expired_lease)
                    .values(
                        status="cancelled",
                        lease_owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                        eta_seconds=None,
                    )
                    .execution_options(synchronize_session=False)
                )
                continue
            # Winning this UPDATE (it also moves updated_at) is what entitles this reaper to send.
            condition = expired_lease if status == "running" else or_(lost_message, due_retry)
            won = rows_changed(
                session,
                update(Job)
                .where(Job.id == job_id, condition)
                .values(
                    **queued_again(), lease_owner=None, lease_expires_at=None, retry_at=None, updated_at=now
                )
                .execution_options(synchronize_session=False),
            )
        if won == 1:
            task_id = enqueue_job(job_id, queue if queue in QUEUES else get_settings().default_queue)
            with session_scope() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(celery_task_id=task_id, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            log.warning("reaper: job %s (%s) sent again as task %s", job_id, status, task_id)
            sent.append(job_id)
    return sent


class Reaper(threading.Thread):
    def __init__(self, celery: Celery, interval: float, queues: list[str] | None = None) -> None:
        super().__init__(name="tagsmith-reaper", daemon=True)
        self.celery = celery
        self.interval = interval
        self.queues = list(queues or [])  # the queues this worker takes, announced every pass
        self.stopped = threading.Event()

    def run(self) -> None:
        from worker.lease import new_owner_id

        owner = new_owner_id()
        sweeping: threading.Thread | None = None
        while True:
            try:
                self._announce(owner)
            except Exception:  # the broker away: jobs say nothing about consumers meanwhile
                log.exception("announcing this worker's queues failed")
            try:
                reap_once(self.celery)
            except Exception:  # the next pass retries; a reaper that dies would strand jobs silently
                log.exception("reaper pass failed")
            # A thread of its own: listing a large storage takes minutes, and meanwhile this
            # worker's queue announcement would expire ("no worker takes this queue") and no
            # lost job would be sent again.
            if sweeping is None or not sweeping.is_alive():
                sweeping = threading.Thread(
                    target=self._sweep, args=(owner,), name="tagsmith-storage-sweep", daemon=True
                )
                sweeping.start()
            if self.stopped.wait(self.interval):
                return

    def _sweep(self, owner: str) -> None:
        from worker.sweeper import sweep_if_due

        try:
            sweep_if_due(self.celery, owner)
        except Exception:  # e.g. storage away: the next interval tries again
            log.exception("storage sweep failed")

    def _announce(self, owner: str) -> None:
        from service.queue_consumers import announce

        if self.queues:
            with self.celery.connection_for_write() as connection:
                # three passes of slack: a busy machine may run one late
                announce(connection.default_channel.client, self.queues, owner, 3 * self.interval + 5)


_started: list[Reaper] = []


def start_reaper_thread(celery: Celery, queues: list[str] | None = None) -> Reaper:
    with contextlib.suppress(IndexError):
        if _started[0].is_alive():
            return _started[0]
    reaper = Reaper(celery, get_worker_settings().reaper_interval_seconds, queues)
    reaper.start()
    _started[:] = [reaper]
    return reaper
