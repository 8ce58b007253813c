"""Signed Slack requests already taken, so that a replay is answered instead of re-executed.

Revision ID: 0003_slack_replays
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_slack_replays"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_replays",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_slack_replays")),
    )
    with op.batch_alter_table("slack_replays", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_slack_replays_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("slack_replays", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_replays_received_at"))
    op.drop_table("slack_replays")
