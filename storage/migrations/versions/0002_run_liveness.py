"""Run liveness: which host and process recorded a running run and when it last reported.

A ``running`` run whose process is gone (``kill -9``, power loss) is then told apart from one
that is still training (``RunRecord.stale``). ``schema_info.version`` becomes 2, so code from before
migrations existed (which only knows version 1) refuses the upgraded store instead of misreading it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no table rebuild: with foreign keys on, rebuilding ``runs`` would cascade)
    op.add_column("runs", sa.Column("host", sa.String(255), nullable=True))
    op.add_column("runs", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE schema_info SET version = 2")


def downgrade() -> None:
    for column in ("heartbeat_at", "pid", "host"):
        op.drop_column("runs", column)
    op.execute("UPDATE schema_info SET version = 1")
