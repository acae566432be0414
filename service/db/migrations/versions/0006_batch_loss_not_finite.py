"""job_batch_losses.loss may be NULL: the loss of a diverging run (NaN, infinite)

SQLite stores NaN as NULL, so a NOT NULL loss failed the progress write of a run whose loss went
NaN, and the run with it. Such numbers are now NULL wherever a run's measures are kept
(``service.db.models.Measure``); PostgreSQL rows that hold them already are read as NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_batch_losses", schema=None) as batch_op:
        batch_op.alter_column("loss", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM job_batch_losses WHERE loss IS NULL")
    with op.batch_alter_table("job_batch_losses", schema=None) as batch_op:
        batch_op.alter_column("loss", existing_type=sa.Float(), nullable=False)
