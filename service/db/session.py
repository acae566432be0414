"""Database engine and sessions.

``get_engine()`` returns one engine per database URL (the URL comes from the settings, so tests
switch databases by changing the environment and calling ``reset_settings()``).
``session_scope()`` is a unit of work: commit on success, rollback on any exception.
SQLite gets WAL, a busy timeout and enforced foreign keys, so the API and a worker process can
share the file. PostgreSQL connections get a connect timeout and TCP keepalives, so a database
host that vanishes (rather than refusing) is noticed in seconds, not after the kernel's minutes.
Imported by the worker: no FastAPI here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings

# What SQLAlchemy raises when the database cannot be used right now: the connection was refused,
# dropped or timed out, or the database refused to work (SQLite "database is locked"); the pool's
# TimeoutError is every connection busy past the pool timeout.
DatabaseUnavailable = (OperationalError, PoolTimeout)

# libpq connection parameters, unless the URL sets them: give up connecting after 10 s, probe an
# idle connection after 30 s, and drop one whose sent data stays unacknowledged for 30 s.
POSTGRES_CONNECT_DEFAULTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite: creates the parent folder and sets the pragmas)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {k: v for k, v in POSTGRES_CONNECT_DEFAULTS.items() if k not in parsed.query}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args)


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().resolved_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
            _factories[url] = sessionmaker(bind=engine, expire_on_commit=False)
        return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    url = url or get_settings().resolved_database_url
    get_engine(url)
    return _factories[url]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back when it raises."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rows_changed(session: Session, statement: Executable) -> int:
    """Execute an UPDATE or DELETE and return the rows it matched: the conditional writes that
    decide who wins a race (claim, cancel, resume) read this. ``Session.execute`` is typed as
    returning any ``Result``; for these statements it is a ``CursorResult``."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def dispose_engines() -> None:
    """Close every pooled connection (tests, process shutdown, after a fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
