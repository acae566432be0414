"""Alembic environment: uses the engine handed over by ``service.db.migrate`` (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from service.db.models import Base
from service.db.session import get_engine

engine = context.config.attributes.get("engine") or get_engine()

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
