"""The database's clock: the one clock for the times that several machines compare.

A lease's expiry is written by the worker that holds it and compared by every other worker's
reaper and claim (likewise ``retry_at`` and the ``updated_at`` the reaper finds a lost message
by). With each machine's own clock, a worker whose clock ran 120 s ahead saw every other worker's
live lease as expired on each pass, sent its job again and took it over, until the job failed
after ``max_attempts`` runs. ``db_now()`` is what those times are written and compared with.

On PostgreSQL it is the server's clock, read with ``clock_timestamp()`` (``now()`` is the start of
the reading's transaction) and carried forward with this machine's monotonic clock, which NTP may
slew but never steps, so the reading stays right between refreshes even if the wall clock jumps.
That costs one query a minute rather than one per call, so ``db_now()`` is cheap enough to be a
column default, and during a database outage it keeps going on the last reading. SQLite is
always one machine (the embedded default): its clock is the local one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from service.db.session import DatabaseUnavailable, get_engine

log = logging.getLogger(__name__)

# Reading the server's clock is cheap; a minute also bounds how far the monotonic clock can drift
# from it (milliseconds) and how long a machine's suspend (which stops that clock) goes unnoticed.
REFRESH_SECONDS = 60.0
# Beyond this the worker warns at start: the database's clock decides leases, but logs, metrics'
# created_at and anything else stamped locally disagree with it by that much.
SKEW_WARNING_SECONDS = 5.0


def wall_clock() -> datetime:
    """This machine's clock: trusted only on SQLite, and to measure the skew to the database's."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Reading:
    server: datetime  # the database's clock at ``monotonic``
    monotonic: float
    skew: float  # this machine's wall clock minus the database's, in seconds
    tried: float  # monotonic time of the last attempt to read (failed ones included)


# No lock: two threads that both refresh only read the clock twice, and a lock held by the reaper
# thread when Celery forks a training process would stay held in the child forever.
_readings: dict[str, _Reading] = {}


def _read(engine: Engine) -> _Reading:
    with engine.connect() as connection:
        wall_before, before = wall_clock(), time.monotonic()
        server = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
        wall_after, after = wall_clock(), time.monotonic()
    # The server read its clock somewhere in the round trip; its middle is the best guess.
    middle = before + (after - before) / 2
    wall = wall_before + (wall_after - wall_before) / 2
    server = server.astimezone(UTC)
    return _Reading(server, middle, (wall - server).total_seconds(), after)


def _reading(engine: Engine) -> _Reading:
    key = str(engine.url)
    reading = _readings.get(key)
    if reading is not None and time.monotonic() - reading.tried < REFRESH_SECONDS:
        return reading
    try:
        fresh = _read(engine)
    except DatabaseUnavailable:
        if reading is None:
            raise
        # Still right (monotonic); trying again on every call would double each stall of an outage.
        fresh = replace(reading, tried=time.monotonic())
    _readings[key] = fresh
    return fresh


def db_now(engine: Engine | None = None) -> datetime:
    """The database's time now (UTC); ``engine`` defaults to the configured database's."""
    engine = engine or get_engine()
    if engine.dialect.name == "sqlite":
        return wall_clock()
    reading = _reading(engine)
    return reading.server + timedelta(seconds=time.monotonic() - reading.monotonic)


def warn_about_clock_skew(engine: Engine | None = None) -> float:
    """Seconds this machine's wall clock is ahead of the database's (negative: behind), with a
    warning when that is more than a few seconds."""
    engine = engine or get_engine()
    if engine.dialect.name == "sqlite":
        return 0.0
    reading = _readings[str(engine.url)] = _read(engine)
    if abs(reading.skew) > SKEW_WARNING_SECONDS:
        log.warning(
            "this machine's clock is %.1f s %s the database's: leases and retries follow the "
            "database's clock, but fix the host's time (NTP), since locally stamped times are off too",
            abs(reading.skew),
            "ahead of" if reading.skew > 0 else "behind",
        )
    return reading.skew
