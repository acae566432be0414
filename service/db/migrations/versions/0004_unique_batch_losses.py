"""job_batch_losses: one row per (job, epoch, batch)

A progress write retried after its commit answer was lost could insert a batch's loss twice. The
index becomes unique (duplicates already there keep their first row) and the worker's insert
skips rows it finds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_INDEX = "ix_job_batch_losses_job_epoch_batch"
_COLUMNS = ["job_id", "epoch", "batch"]


def upgrade() -> None:
    op.execute(
        "DELETE FROM job_batch_losses WHERE id NOT IN ("
        "SELECT MIN(id) FROM job_batch_losses GROUP BY job_id, epoch, batch)"
    )
    with op.batch_alter_table("job_batch_losses", schema=None) as batch_op:
        batch_op.drop_index(_INDEX)
        batch_op.create_index(_INDEX, _COLUMNS, unique=True)


def downgrade() -> None:
    with op.batch_alter_table("job_batch_losses", schema=None) as batch_op:
        batch_op.drop_index(_INDEX)
        batch_op.create_index(_INDEX, _COLUMNS, unique=False)
