"""SQLAlchemy table models of Quorum's storage; `metadata` is what Alembic migrates to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from bot.domain.model import (
    DeliveryState,
    MessageState,
    RejectMode,
    RequestState,
    Risk,
    VoteKind,
)

# Deterministic constraint names, so that later (batch) migrations can address them on every
# database instead of relying on whatever name the backend made up.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Autoincrementing keys: BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

ID = 64  # request, delivery, freeze and delegation ids
SLACK_ID = 64  # Slack user / channel ids and message timestamps
NAME = 200  # services, environments, teams, rules, event kinds
HASH = 64  # sha256 hex


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that only accepts aware datetimes and always returns aware UTC.

    SQLite has no time zone type: values are stored as UTC text and given their zone back on read,
    so the same code compares and returns the same instants on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite stores the text without an offset; everything in the column is UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _one_of(column: str, values: list[str]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class RequestRow(Base):
    """An approval request (`ApprovalRequest`) plus the SLA timer columns the scheduler uses."""

    __tablename__ = "requests"
    __table_args__ = (
        CheckConstraint(_one_of("state", [s.value for s in RequestState]), name="state"),
        CheckConstraint(_one_of("risk", [r.value for r in Risk]), name="risk"),
        CheckConstraint(_one_of("reject_mode", [m.value for m in RejectMode]), name="reject_mode"),
        Index("ix_requests_state_created_at", "state", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    service: Mapped[str | None] = mapped_column(String(NAME))
    environment: Mapped[str] = mapped_column(String(NAME))
    risk: Mapped[str] = mapped_column(String(16))
    owner_team: Mapped[str | None] = mapped_column(String(NAME))
    channel: Mapped[str] = mapped_column(String(SLACK_ID))
    rules: Mapped[list[Any]]  # [{"name", "team", "approvals", "origin"}]
    reject_mode: Mapped[str] = mapped_column(String(16))
    self_approval: Mapped[bool] = mapped_column(Boolean)
    requester: Mapped[dict[str, Any]]
    details: Mapped[dict[str, Any]]
    callback: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # indexed with created_at, see above
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)
    message_ts: Mapped[str | None] = mapped_column(String(SLACK_ID))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    card_revision: Mapped[int] = mapped_column(Integer, default=-1)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    # SLA timers: when the scheduler next has to look at this request (reminder, escalation,
    # expiry), how far along the ladder it is, and freeze / post-deploy review deadlines.
    next_due_at: Mapped[datetime | None] = mapped_column(index=True)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    frozen_until: Mapped[datetime | None]
    review_due_at: Mapped[datetime | None]
    sla_started_at: Mapped[datetime | None]
    reviewed_at: Mapped[datetime | None]
    # The provider's identity of the deployment (GitLab project/deployment, …) and its status.
    external_ref: Mapped[str | None] = mapped_column(String(256), index=True)
    external_status: Mapped[str | None] = mapped_column(String(64))


class VoteRow(Base):
    """A recorded vote. `actor_key` is whoever clicked (the actor, else the voter): unique per
    request, so nobody gets two votes on a request whether voting as themselves or as a delegate."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("request_id", "voter"),
        UniqueConstraint("request_id", "actor_key"),
        CheckConstraint(_one_of("kind", [k.value for k in VoteKind]), name="kind"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("requests.id", ondelete="CASCADE")
    )
    voter: Mapped[str] = mapped_column(String(SLACK_ID))
    actor: Mapped[str | None] = mapped_column(String(SLACK_ID))
    actor_key: Mapped[str] = mapped_column(String(SLACK_ID))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(NAME))
    cast_at: Mapped[datetime]
    announced_at: Mapped[datetime | None] = mapped_column(index=True)


class EventRow(Base):
    """The append-only audit trail; `hash` = sha256(prev_hash || canonical JSON of the entry)."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    kind: Mapped[str] = mapped_column(String(NAME))
    actor: Mapped[str | None] = mapped_column(String(SLACK_ID))
    data: Mapped[dict[str, Any]]
    at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(HASH))
    hash: Mapped[str] = mapped_column(String(HASH), unique=True)


class OutboxRow(Base):
    """A pipeline callback to deliver; claimed by a worker with a lease, retried with backoff."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_one_of("state", [s.value for s in DeliveryState]), name="state"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    target: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default="decision", server_default="decision")
    payload: Mapped[dict[str, Any]]
    webhook_id: Mapped[str] = mapped_column(String(128), unique=True)  # same on every retry
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class FreezeRow(Base):
    __tablename__ = "freezes"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    environments: Mapped[list[Any]]  # empty: every environment
    services: Mapped[list[Any]]  # empty: every service
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(SLACK_ID))
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(SLACK_ID))


class DelegationRow(Base):
    __tablename__ = "delegations"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    delegator: Mapped[str] = mapped_column(String(SLACK_ID), index=True)
    delegate: Mapped[str] = mapped_column(String(SLACK_ID), index=True)
    environments: Mapped[list[Any]]  # empty: every environment
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ProcessedWebhookRow(Base):
    """Inbound webhook ids already handled, so that a redelivery opens no second request."""

    __tablename__ = "processed_webhooks"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(HASH))
    request_id: Mapped[str | None] = mapped_column(String(ID))
    received_at: Mapped[datetime] = mapped_column(index=True)


class MessageRow(Base):
    """A Slack message to send (`OutgoingMessage`): durable, paced per channel, sent once."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_one_of("state", [s.value for s in MessageState]), name="state"),
        Index("ix_messages_state_not_before", "state", "not_before"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(256), unique=True)
    request_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    channel: Mapped[str] = mapped_column(String(SLACK_ID))
    dm: Mapped[bool] = mapped_column(Boolean, default=False)
    thread_ts: Mapped[str | None] = mapped_column(String(SLACK_ID))
    text: Mapped[str] = mapped_column(Text)
    blocks: Mapped[list[Any]]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class SlackReplayRow(Base):
    """Signed Slack requests already taken (`bot.ports.SlackReplayLog`): a replay of one (same
    signature and timestamp) gets the first answer instead of acting again. Kept a little past
    Slack's 5-minute signature window, after which a replay fails the signature check anyway."""

    __tablename__ = "slack_replays"

    key: Mapped[str] = mapped_column(String(HASH), primary_key=True)  # sha256 of ts + signature
    received_at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[int | None] = mapped_column(Integer)  # None: taken, not answered yet
    content_type: Mapped[str | None] = mapped_column(String(NAME))
    body: Mapped[str | None] = mapped_column(Text)
