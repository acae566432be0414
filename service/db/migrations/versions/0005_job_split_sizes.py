"""jobs.train_sentences, dev_sentences, test_sentences: the split sizes a run trains and scores on

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("train_sentences", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("dev_sentences", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("test_sentences", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("test_sentences")
        batch_op.drop_column("dev_sentences")
        batch_op.drop_column("train_sentences")
