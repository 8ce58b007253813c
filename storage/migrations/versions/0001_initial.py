"""Initial schema: requests, votes, events, outbox, freezes, delegations, processed_webhooks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delegations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("delegator", sa.String(length=64), nullable=False),
        sa.Column("delegate", sa.String(length=64), nullable=False),
        sa.Column("environments", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delegations")),
    )
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delegations_delegate"), ["delegate"], unique=False)
        batch_op.create_index(batch_op.f("ix_delegations_delegator"), ["delegator"], unique=False)
        batch_op.create_index(batch_op.f("ix_delegations_ends_at"), ["ends_at"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_events_hash")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_request_id"), ["request_id"], unique=False)

    op.create_table(
        "freezes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("environments", sa.JSON(), nullable=False),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_freezes")),
    )
    with op.batch_alter_table("freezes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_freezes_ends_at"), ["ends_at"], unique=False)

    op.create_table(
        "processed_webhooks",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("webhook_id", sa.String(length=256), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "webhook_id", name=op.f("pk_processed_webhooks")),
    )
    with op.batch_alter_table("processed_webhooks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_processed_webhooks_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "requests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=True),
        sa.Column("environment", sa.String(length=200), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=False),
        sa.Column("owner_team", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("reject_mode", sa.String(length=16), nullable=False),
        sa.Column("self_approval", sa.Boolean(), nullable=False),
        sa.Column("requester", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("callback", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("message_ts", sa.String(length=64), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("card_revision", sa.Integer(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.Column("frozen_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "reject_mode IN ('any', 'quorum')", name=op.f("ck_requests_reject_mode")
        ),
        sa.CheckConstraint("risk IN ('low', 'medium', 'high')", name=op.f("ck_requests_risk")),
        sa.CheckConstraint(
            "state IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')",
            name=op.f("ck_requests_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_requests_next_due_at"), ["next_due_at"], unique=False)
        batch_op.create_index("ix_requests_state_created_at", ["state", "created_at"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("webhook_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name=op.f("ck_outbox_state")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_outbox_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("webhook_id", name=op.f("uq_outbox_webhook_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_request_id"), ["request_id"], unique=False)

    op.create_table(
        "votes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("voter", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("actor_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("cast_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('approve', 'reject')", name=op.f("ck_votes_kind")),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_votes_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_votes")),
        sa.UniqueConstraint("request_id", "actor_key", name=op.f("uq_votes_request_id_actor_key")),
        sa.UniqueConstraint("request_id", "voter", name=op.f("uq_votes_request_id_voter")),
    )
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_votes_announced_at"), ["announced_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_votes_announced_at"))

    op.drop_table("votes")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_request_id"))
        batch_op.drop_index(batch_op.f("ix_outbox_next_attempt_at"))

    op.drop_table("outbox")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_state_created_at")
        batch_op.drop_index(batch_op.f("ix_requests_next_due_at"))

    op.drop_table("requests")
    with op.batch_alter_table("processed_webhooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_processed_webhooks_received_at"))

    op.drop_table("processed_webhooks")
    with op.batch_alter_table("freezes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_freezes_ends_at"))

    op.drop_table("freezes")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_request_id"))

    op.drop_table("events")
    with op.batch_alter_table("delegations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delegations_ends_at"))
        batch_op.drop_index(batch_op.f("ix_delegations_delegator"))
        batch_op.drop_index(batch_op.f("ix_delegations_delegate"))

    op.drop_table("delegations")
