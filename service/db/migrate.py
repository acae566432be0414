"""Run the Alembic migrations from code (no alembic.ini): ``upgrade()`` brings the database at
the settings' URL (or ``url``) to the newest schema. ``python -m service.db.migrate`` does the same
from a shell."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from service.db.session import get_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = get_engine(url)
    # Passed as an object, not a string: the URL may hold a password that ConfigParser would mangle.
    config.attributes["engine"] = engine
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


if __name__ == "__main__":
    upgrade()
    print("database schema is up to date")
