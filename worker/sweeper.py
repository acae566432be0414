"""The storage sweep on a schedule: every ``storage_sweep_hours`` one worker removes what
``tagsmith clean-storage`` would (storage no row points to, unchanged for
``storage_sweep_min_age_minutes``).

A key in the broker elects that worker: whoever sets it first (``SET NX`` with the interval as
its expiry) sweeps, the others find it set and skip until it expires. A broker that lost the
key (restarted without persistence) only brings the next sweep forward, which is harmless.
"""

from __future__ import annotations

import logging

from celery import Celery

from service.logic.storage_sweep import ForeignStorage, Leftover, clean_storage
from worker.settings import get_worker_settings

log = logging.getLogger(__name__)

SWEEP_KEY = "tagsmith:storage-sweep"


def sweep_if_due(celery: Celery, owner: str) -> list[Leftover] | None:
    """Sweep when this worker wins this interval's key; None when it is not its turn (or off)."""
    settings = get_worker_settings()
    hours = settings.storage_sweep_hours
    if hours <= 0:
        return None
    with celery.connection_for_read() as connection:
        client = connection.default_channel.client
        if not client.set(SWEEP_KEY, owner, nx=True, ex=max(1, round(hours * 3600))):
            return None
    try:
        found = clean_storage(settings.storage_sweep_min_age_minutes * 60)
    except ForeignStorage as refused:
        log.error("storage sweep: %s", refused)
        return []
    if found:
        log.warning(
            "storage sweep: removed %d leftover(s), %s bytes: %s",
            len(found),
            f"{sum(f.bytes for f in found):,}",
            ", ".join(f.key for f in found[:10]) + (" ..." if len(found) > 10 else ""),
        )
    else:
        log.info("storage sweep: nothing to remove")
    return found
