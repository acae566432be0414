"""Run the Alembic migrations from code (no alembic.ini): ``upgrade()`` brings the database at
the settings' URL (or ``url``) to the newest schema. ``python -m service.db.migrate`` does the same
from a shell."""

from __future__ import annotations

import contextlib
import fcntl
import functools
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

from service.db.session import get_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = get_engine(url)
    # Passed as an object, not a string: the URL may hold a password that ConfigParser would mangle.
    config.attributes["engine"] = engine
    return config


# pg_advisory_lock key: "tagsmith" in ASCII, as a bigint.
_PG_LOCK_KEY = 0x7461677320736D74


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migration at a time per database: API processes, replicas and `tagsmith migrate` that
    start together raced on the DDL ("duplicate key value ... pg_type_typname_nsp_index") and some
    of them failed. The ones that wait then find the schema up to date."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def _revisions() -> tuple[str | None, frozenset[str]]:
    """This code's head revision and all its revisions: read from the migration scripts once per
    process, not on every /ready probe."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(config)
    return scripts.get_current_head(), frozenset(s.revision for s in scripts.walk_revisions())


def schema_problem(url: str | None = None) -> str | None:
    """Why the database at ``url`` cannot be used by this code (None: its schema is the newest)."""
    from alembic.runtime.migration import MigrationContext

    config = alembic_config(url)
    head, known = _revisions()
    with config.attributes["engine"].connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return None
    if current is not None and current not in known:
        return f"its schema ({current}) is newer than this Tagsmith's ({head}): upgrade Tagsmith"
    return (
        f"it is not migrated (schema {current or 'none'}, this Tagsmith needs {head}): if it is the "
        "deployment's, run tagsmith migrate; otherwise set TAGSMITH_DATABASE_URL"
    )


class SchemaMismatch(RuntimeError):
    """The database answers, but its schema is not the one this code needs."""


def require_current_schema(url: str | None = None) -> None:
    """Raise SchemaMismatch (with ``schema_problem``'s words) unless the schema is the newest."""
    problem = schema_problem(url)
    if problem is not None:
        raise SchemaMismatch(problem)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    config = alembic_config(url)
    with _migration_lock(config.attributes["engine"]):
        command.upgrade(config, revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


if __name__ == "__main__":
    upgrade()
    print("database schema is up to date")
