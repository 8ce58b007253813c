"""Repositories of the unit of work: map table rows to the domain dataclasses and back.

Each repository works inside the one AsyncSession of its unit of work; nothing here commits.
Domain objects never carry SQLAlchemy state: every read builds fresh dataclasses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, TypeVar

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import (
    ApprovalRequest,
    Delegation,
    Delivery,
    DeliveryState,
    Event,
    Freeze,
    Link,
    MessageState,
    OutgoingMessage,
    ProcessedWebhook,
    RejectMode,
    RequestDetails,
    Requester,
    RequestState,
    Risk,
    Rule,
    Vote,
    VoteKind,
)
from bot.ports import ConcurrencyError, DuplicateVoteError
from storage.tables import (
    Base,
    DelegationRow,
    EventRow,
    FreezeRow,
    MessageRow,
    OutboxRow,
    ProcessedWebhookRow,
    RequestRow,
    VoteRow,
)

GENESIS_HASH: Final = "0" * 64
# Key of the transaction-level advisory lock that serialises appends to the event chain on
# PostgreSQL (any constant works as long as every appender uses the same one): "QUORUM" in ASCII.
EVENT_CHAIN_LOCK_KEY: Final = 0x51554F52554D

# SLA timer columns of `requests` that the domain may carry as `ApprovalRequest` fields; each one
# present on the dataclass is read and written with it, the others keep their column defaults.
_SLA_FIELDS: Final = (
    "next_due_at",
    "reminders_sent",
    "frozen_until",
    "review_due_at",
    "sla_started_at",
    "reviewed_at",
    "external_ref",
    "external_status",
)
_REQUEST_FIELDS: Final = frozenset(f.name for f in fields(ApprovalRequest))
_MAPPED_SLA_FIELDS: Final = tuple(name for name in _SLA_FIELDS if name in _REQUEST_FIELDS)
# Written only by `mark_card_synced`, so that a save from a stale read cannot move the card back.
_CARD_FIELDS: Final = ("card_revision", "message_ts")


# ---------------------------------------------------------------------------------------------
# Canonical JSON and the event hash chain


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return _iso_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC datetime")
    return value


def _iso_utc(value: datetime) -> str:
    return _aware(value).astimezone(UTC).isoformat()


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 text, datetimes as ISO-8601 UTC."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def event_hash(
    prev_hash: str,
    *,
    kind: str,
    at: datetime,
    request_id: str | None,
    actor: str | None,
    data: Mapping[str, Any],
) -> str:
    """sha256 hex of `prev_hash` followed by the canonical JSON of the entry."""
    body = canonical_json(
        {"kind": kind, "at": at, "request_id": request_id, "actor": actor, "data": data}
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _plain_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """`value` as plain JSON types (datetimes become ISO strings), exactly as it will be read
    back, so that the hash computed on append is the one recomputed on verify."""
    result: dict[str, Any] = json.loads(canonical_json(dict(value)))
    return result


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    # asyncpg (through SQLAlchemy's adapter): SQLSTATE 23505 unique_violation.
    if getattr(orig, "sqlstate", None) == "23505" or getattr(orig, "pgcode", None) == "23505":
        return True
    # sqlite3: extended result codes for UNIQUE and PRIMARY KEY violations.
    return getattr(orig, "sqlite_errorname", None) in {
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
    }


# ---------------------------------------------------------------------------------------------
# Requests


def _rules_to_json(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "team": r.team, "approvals": r.approvals, "origin": r.origin}
        | ({"excluded": list(r.excluded)} if r.excluded else {})
        for r in rules
    ]


def _rules_from_json(value: list[Any]) -> tuple[Rule, ...]:
    return tuple(
        Rule(
            name=r["name"],
            team=r["team"],
            approvals=int(r["approvals"]),
            origin=r.get("origin", "environment"),
            excluded=tuple(r.get("excluded", ())),
        )
        for r in value
    )


def _requester_to_json(requester: Requester) -> dict[str, Any]:
    return {
        "email": requester.email,
        "github": requester.github,
        "slack": requester.slack,
        "slack_user": requester.slack_user,
    }


def _requester_from_json(value: Mapping[str, Any]) -> Requester:
    return Requester(
        email=value.get("email"),
        github=value.get("github"),
        slack=value.get("slack"),
        slack_user=value.get("slack_user"),
    )


def _details_to_json(details: RequestDetails) -> dict[str, Any]:
    return {
        "version": details.version,
        "sha": details.sha,
        "title": details.title,
        "description": details.description,
        "change_ticket": details.change_ticket,
        "links": [{"text": link.text, "url": link.url} for link in details.links],
        "event": details.event,
    }


def _details_from_json(value: Mapping[str, Any]) -> RequestDetails:
    return RequestDetails(
        version=value.get("version"),
        sha=value.get("sha"),
        title=value.get("title"),
        description=value.get("description"),
        change_ticket=value.get("change_ticket"),
        links=tuple(Link(text=link["text"], url=link["url"]) for link in value.get("links", ())),
        event=value.get("event"),
    )


def _request_values(request: ApprovalRequest) -> dict[str, Any]:
    """Column values of every domain field of `request`."""
    values: dict[str, Any] = {
        "id": request.id,
        "source": request.source,
        "service": request.service,
        "environment": request.environment,
        "risk": request.risk.value,
        "owner_team": request.owner_team,
        "channel": request.channel,
        "rules": _rules_to_json(request.rules),
        "reject_mode": request.reject_mode.value,
        "self_approval": request.self_approval,
        "requester": _requester_to_json(request.requester),
        "details": _details_to_json(request.details),
        "callback": _plain_json(request.callback),
        "created_at": request.created_at,
        "state": request.state.value,
        "decided_at": request.decided_at,
        "decision_reason": request.decision_reason,
        "message_ts": request.message_ts,
        "revision": request.revision,
        "card_revision": request.card_revision,
        "escalation_level": request.escalation_level,
        "break_glass": request.break_glass,
    }
    for name in _MAPPED_SLA_FIELDS:
        values[name] = getattr(request, name)
    return values


def _request_from_row(row: RequestRow) -> ApprovalRequest:
    extra = {name: getattr(row, name) for name in _MAPPED_SLA_FIELDS}
    return ApprovalRequest(
        id=row.id,
        source=row.source,
        service=row.service,
        environment=row.environment,
        risk=Risk(row.risk),
        owner_team=row.owner_team,
        channel=row.channel,
        rules=_rules_from_json(row.rules),
        reject_mode=RejectMode(row.reject_mode),
        self_approval=row.self_approval,
        requester=_requester_from_json(row.requester),
        details=_details_from_json(row.details),
        created_at=row.created_at,
        callback=dict(row.callback),
        state=RequestState(row.state),
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        message_ts=row.message_ts,
        revision=row.revision,
        card_revision=row.card_revision,
        escalation_level=row.escalation_level,
        break_glass=row.break_glass,
        **extra,
    )


class SqlRequestRepository:
    """`bot.ports.RequestRepository` on the `requests` table (optimistic `revision` column)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, request: ApprovalRequest) -> None:
        self._session.add(RequestRow(**_request_values(request)))
        await self._session.flush()

    async def get(self, request_id: str) -> ApprovalRequest | None:
        row = await self._session.scalar(
            select(RequestRow)
            .where(RequestRow.id == request_id)
            .execution_options(populate_existing=True)
        )
        return None if row is None else _request_from_row(row)

    async def get_for_update(self, request_id: str) -> ApprovalRequest | None:
        """Like `get`, but locks the row until the unit of work ends: SELECT … FOR UPDATE on
        PostgreSQL; on SQLite the writing transaction already holds the database write lock."""
        row = await self._session.scalar(
            select(RequestRow)
            .where(RequestRow.id == request_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return None if row is None else _request_from_row(row)

    async def get_many(self, request_ids: Sequence[str]) -> Mapping[str, ApprovalRequest]:
        """Several requests in one statement; missing ids are left out."""
        if not request_ids:
            return {}
        rows = await self._session.scalars(
            select(RequestRow)
            .where(RequestRow.id.in_(sorted(set(request_ids))))
            .execution_options(populate_existing=True)
        )
        return {row.id: _request_from_row(row) for row in rows}

    async def lock_many(self, request_ids: Sequence[str]) -> Mapping[str, int]:
        """Lock several requests (id order, FOR UPDATE on PostgreSQL) and return their current
        revisions, without loading them: a caller holding a copy at that revision can use it."""
        if not request_ids:
            return {}
        table = RequestRow.__table__
        assert isinstance(table, Table)
        result = await self._session.execute(
            select(table.c.id, table.c.revision)
            .where(table.c.id.in_(sorted(set(request_ids))))
            .order_by(table.c.id)
            .with_for_update()
        )
        return {str(request_id): int(revision) for request_id, revision in result}

    async def get_many_for_update(
        self, request_ids: Sequence[str]
    ) -> Mapping[str, ApprovalRequest]:
        """`get_for_update` for several requests in one statement (locked in id order, so two
        writers never lock the same rows in opposite orders); missing ids are left out."""
        if not request_ids:
            return {}
        rows = await self._session.scalars(
            select(RequestRow)
            .where(RequestRow.id.in_(sorted(set(request_ids))))
            .order_by(RequestRow.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {row.id: _request_from_row(row) for row in rows}

    async def save_many(
        self, requests: Sequence[ApprovalRequest], *, only: Sequence[str] | None = None
    ) -> None:
        """`save` for several requests read in this unit of work, in one executemany. Each row
        must still be at the revision that was read; the caller holds their locks (see
        `get_many_for_update`), so a mismatch is a bug and raises ConcurrencyError. `only`
        names the fields that changed (the vote writer changes only the decision fields), so
        the others are not serialised and rewritten."""
        if not requests:
            return
        params = []
        for request in requests:
            if only is None:
                values = _request_values(request)
                for name in _CARD_FIELDS:
                    del values[name]
            else:  # plain columns only: enums by value, nothing to serialise
                values = {"id": request.id}
                for name in only:
                    value = getattr(request, name)
                    values[name] = value.value if isinstance(value, Enum) else value
            values["b_id"] = values.pop("id")
            values["b_revision"] = request.revision
            values["revision"] = request.revision + 1
            params.append(values)
        columns: dict[str, Any] = {
            name: bindparam(name) for name in params[0] if not name.startswith("b_")
        }
        table = RequestRow.__table__
        assert isinstance(table, Table)
        # A Core UPDATE (not the ORM's bulk-by-primary-key mode): executemany with a revision check.
        result = await self._session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.revision == bindparam("b_revision"))
            .values(**columns),
            params,
        )
        dialect = self._session.get_bind().dialect
        rowcount = getattr(result, "rowcount", -1)
        if dialect.supports_sane_multi_rowcount and rowcount != len(requests):
            raise ConcurrencyError("a request changed since it was read and locked")
        for request in requests:
            request.revision += 1

    async def save(self, request: ApprovalRequest) -> None:
        """Write back every domain field except the card position (see `mark_card_synced`),
        if the stored revision is still `request.revision`; then bump it on the row and on
        `request` and refresh `request`'s card fields. Else raise ConcurrencyError."""
        values = _request_values(request)
        for name in ("id", *_CARD_FIELDS):
            del values[name]
        values["revision"] = request.revision + 1
        result = await self._session.execute(
            update(RequestRow)
            .where(RequestRow.id == request.id, RequestRow.revision == request.revision)
            .values(**values)
            .returning(RequestRow.card_revision, RequestRow.message_ts)
            .execution_options(synchronize_session=False)
        )
        row = result.one_or_none()
        if row is None:
            raise ConcurrencyError(
                f"request {request.id} changed since revision {request.revision} was read"
            )
        request.revision += 1
        request.card_revision, request.message_ts = row.card_revision, row.message_ts

    async def list_open(self) -> Sequence[ApprovalRequest]:
        rows = await self._session.scalars(
            select(RequestRow)
            .where(RequestRow.state == RequestState.PENDING.value)
            .order_by(RequestRow.created_at, RequestRow.id)
            .execution_options(populate_existing=True)
        )
        return [_request_from_row(row) for row in rows]

    async def count_open(self) -> int:
        """How many requests are pending (for metrics and the readiness page)."""
        count = await self._session.scalar(
            select(func.count())
            .select_from(RequestRow)
            .where(RequestRow.state == RequestState.PENDING.value)
        )
        return int(count or 0)

    async def list_card_out_of_date(self, limit: int) -> Sequence[ApprovalRequest]:
        rows = await self._session.scalars(
            select(RequestRow)
            .where(RequestRow.card_revision < RequestRow.revision)
            .order_by(RequestRow.created_at, RequestRow.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return [_request_from_row(row) for row in rows]

    async def mark_card_synced(
        self, request_id: str, revision: int, channel: str, message_ts: str
    ) -> None:
        """Record that the card at (channel, message_ts) shows `revision`. Never goes back: a
        revision at or below the recorded one changes nothing. Does not bump `revision`."""
        await self._session.execute(
            update(RequestRow)
            .where(RequestRow.id == request_id, RequestRow.card_revision < revision)
            .values(card_revision=revision, channel=channel, message_ts=message_ts)
            .execution_options(synchronize_session=False)
        )

    async def list_reviews_open(self, limit: int) -> Sequence[ApprovalRequest]:
        """Break-glass requests whose post-incident review is not recorded, earliest due first."""
        rows = await self._session.scalars(
            select(RequestRow)
            .where(RequestRow.break_glass.is_(True), RequestRow.reviewed_at.is_(None))
            .order_by(RequestRow.review_due_at, RequestRow.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return [_request_from_row(row) for row in rows]

    async def find_by_external_ref(self, source: str, external_ref: str) -> ApprovalRequest | None:
        """The newest request `source` opened for the provider's deployment `external_ref`."""
        row = await self._session.scalar(
            select(RequestRow)
            .where(RequestRow.source == source, RequestRow.external_ref == external_ref)
            .order_by(RequestRow.created_at.desc(), RequestRow.id.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
        return _request_from_row(row) if row is not None else None

    async def list_due(self, now: datetime, limit: int) -> Sequence[ApprovalRequest]:
        """Requests whose SLA timer (`next_due_at`) is at or before `now`, earliest first."""
        rows = await self._session.scalars(
            select(RequestRow)
            .where(RequestRow.next_due_at <= now)
            .order_by(RequestRow.next_due_at, RequestRow.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return [_request_from_row(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        """The earliest SLA timer of any request, to arm the scheduler; None when none is set."""
        return await self._session.scalar(select(func.min(RequestRow.next_due_at)))


# ---------------------------------------------------------------------------------------------
# Votes


def _vote_from_row(row: VoteRow) -> Vote:
    return Vote(
        request_id=row.request_id,
        voter=row.voter,
        kind=VoteKind(row.kind),
        cast_at=row.cast_at,
        reason=row.reason,
        actor=row.actor,
        rule=row.rule,
    )


class SqlVoteRepository:
    """`bot.ports.VoteRepository` on the `votes` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, vote: Vote) -> None:
        """Raises DuplicateVoteError when the voter or the person clicking already has a vote on
        the request; the unit of work stays usable (the insert runs in a savepoint)."""
        try:
            async with self._session.begin_nested():
                await self._insert([vote])
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateVoteError(
                    f"{vote.clicked_by} already has a vote on request {vote.request_id}"
                ) from exc
            raise

    async def add_many(self, votes: Sequence[Vote]) -> None:
        """Insert several votes in one statement (the group-commit path, whose caller holds the
        requests' locks and has already ruled out duplicates). Raises DuplicateVoteError if the
        unique constraints disagree; the unit of work is then unusable and must be rolled back."""
        if not votes:
            return
        try:
            await self._insert(votes)
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateVoteError("a vote in the batch duplicates a recorded one") from exc
            raise

    async def _insert(self, votes: Sequence[Vote]) -> None:
        await self._session.execute(
            insert(_table(VoteRow)),  # Core, not the ORM's bulk-insert machinery
            [
                {
                    "request_id": vote.request_id,
                    "voter": vote.voter,
                    "actor": vote.actor,
                    "actor_key": vote.clicked_by,
                    "kind": vote.kind.value,
                    "reason": vote.reason,
                    "rule": vote.rule,
                    "cast_at": vote.cast_at,
                }
                for vote in votes
            ],
        )

    async def list_for(self, request_id: str) -> Sequence[Vote]:
        rows = await self._session.scalars(
            select(VoteRow).where(VoteRow.request_id == request_id).order_by(VoteRow.seq)
        )
        return [_vote_from_row(row) for row in rows]

    async def list_for_many(self, request_ids: Sequence[str]) -> Mapping[str, Sequence[Vote]]:
        """The votes of several requests in one statement, each list in the order cast.

        A Core select (no ORM identity map): the group-commit writer reads every vote of every
        request in its batch, and building ORM instances for them was a third of its time."""
        found: dict[str, list[Vote]] = {request_id: [] for request_id in request_ids}
        if not found:
            return found
        table = VoteRow.__table__
        assert isinstance(table, Table)
        result = await self._session.execute(
            select(
                table.c.request_id,
                table.c.voter,
                table.c.kind,
                table.c.cast_at,
                table.c.reason,
                table.c.actor,
                table.c.rule,
            )
            .where(table.c.request_id.in_(list(found)))
            .order_by(table.c.seq)
        )
        for request_id, voter, kind, cast_at, reason, actor, rule in result:
            found[request_id].append(
                Vote(
                    request_id=request_id,
                    voter=voter,
                    kind=VoteKind(kind),
                    cast_at=cast_at,
                    reason=reason,
                    actor=actor,
                    rule=rule,
                )
            )
        return found
        rows = await self._session.scalars(
            select(VoteRow).where(VoteRow.request_id.in_(list(found))).order_by(VoteRow.seq)
        )
        for row in rows:
            found[row.request_id].append(_vote_from_row(row))
        return found

    async def list_unannounced(self, limit: int) -> Sequence[Vote]:
        """Votes not yet posted as a thread reply, oldest first."""
        rows = await self._session.scalars(
            select(VoteRow).where(VoteRow.announced_at.is_(None)).order_by(VoteRow.seq).limit(limit)
        )
        return [_vote_from_row(row) for row in rows]

    async def mark_announced(self, request_id: str, voter: str, at: datetime) -> None:
        """Record the thread reply for the vote; a vote already marked keeps its first time."""
        await self._session.execute(
            update(VoteRow)
            .where(
                VoteRow.request_id == request_id,
                VoteRow.voter == voter,
                VoteRow.announced_at.is_(None),
            )
            .values(announced_at=at)
            .execution_options(synchronize_session=False)
        )


# ---------------------------------------------------------------------------------------------
# Event log


def _event_from_row(row: EventRow) -> Event:
    return Event(
        kind=row.kind, at=row.at, request_id=row.request_id, actor=row.actor, data=dict(row.data)
    )


class SqlEventLog:
    """`bot.ports.EventLog`: the hash-chained, append-only `events` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._pending: list[tuple[Event, dict[str, Any], datetime]] = []

    async def append(self, event: Event) -> None:
        """Append one event to the chain (written at the latest when the unit of work commits)."""
        await self.append_many([event])

    async def append_many(self, events: Sequence[Event]) -> None:
        """Append events to the chain, in order (written at the latest at commit)."""
        for event in events:
            # Serialise now: a naive time is refused at the call, not at commit.
            data = _plain_json(event.data)
            self._pending.append((event, data, _aware(event.at).astimezone(UTC)))

    async def flush(self) -> None:
        """Write the appended events, reading the chain's tail once. The unit of work calls this
        before committing, so a batch of votes costs one tail read and one INSERT. Two units of
        work never read the same tail: PostgreSQL takes a transaction-level advisory lock first;
        SQLite writers hold the database write lock."""
        events, self._pending = self._pending, []
        if not events:
            return
        bind = self._session.get_bind()
        if bind.dialect.name == "postgresql":
            await self._session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_CHAIN_LOCK_KEY}
            )
        await self._session.flush()  # rows added through the ORM must come first in the chain
        prev_hash = await self._session.scalar(
            select(EventRow.hash).order_by(EventRow.seq.desc()).limit(1)
        )
        prev_hash = prev_hash or GENESIS_HASH
        rows: list[dict[str, Any]] = []
        for event, data, at in events:
            digest = event_hash(
                prev_hash,
                kind=event.kind,
                at=at,
                request_id=event.request_id,
                actor=event.actor,
                data=data,
            )
            rows.append(
                {
                    "request_id": event.request_id,
                    "kind": event.kind,
                    "actor": event.actor,
                    "data": data,
                    "at": at,
                    "prev_hash": prev_hash,
                    "hash": digest,
                }
            )
            prev_hash = digest
        # executemany (no RETURNING): the driver inserts row after row, so `seq` follows the chain.
        await self._session.execute(insert(_table(EventRow)), rows)

    async def list_for(self, request_id: str) -> Sequence[Event]:
        await self.flush()
        rows = await self._session.scalars(
            select(EventRow).where(EventRow.request_id == request_id).order_by(EventRow.seq)
        )
        return [_event_from_row(row) for row in rows]

    async def verify_chain(self) -> int | None:
        """None when every entry links to its predecessor and its hash recomputes, else the
        `seq` of the first entry that does not."""
        await self.flush()
        rows = await self._session.stream(
            select(
                EventRow.seq,
                EventRow.kind,
                EventRow.at,
                EventRow.request_id,
                EventRow.actor,
                EventRow.data,
                EventRow.prev_hash,
                EventRow.hash,
            )
            .order_by(EventRow.seq)
            .execution_options(yield_per=500)
        )
        expected_prev = GENESIS_HASH
        async for row in rows:
            recomputed = event_hash(
                row.prev_hash,
                kind=row.kind,
                at=row.at,
                request_id=row.request_id,
                actor=row.actor,
                data=row.data,
            )
            if row.prev_hash != expected_prev or row.hash != recomputed:
                await rows.close()
                return int(row.seq)
            expected_prev = row.hash
        return None


def _table(model: type[Base]) -> Table:
    """The Core table of a mapped class: for the hot paths' executemany statements, which the
    ORM would route through its slower bulk machinery."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# ---------------------------------------------------------------------------------------------
# Leased work queues (the outbox, the Slack message queue)

_Leased = TypeVar("_Leased", "OutboxRow", "MessageRow")


async def _claim_leased(
    session: AsyncSession,
    model: type[_Leased],
    due: ColumnElement[bool],
    order: Sequence[Any],
    *,
    pending: str,
    now: datetime,
    limit: int,
    lease_until: datetime,
) -> Sequence[_Leased]:
    """Pending rows that are `due` and not leased (or whose lease ran out), in `order`, leased
    until `lease_until`. PostgreSQL skips rows another worker has locked (FOR UPDATE SKIP
    LOCKED); SQLite writers are serialised by the database write lock."""
    rows = (
        await session.scalars(
            select(model)
            .where(
                model.state == pending,
                due,
                (model.lease_until.is_(None)) | (model.lease_until <= now),
            )
            .order_by(*order)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    ).all()
    for row in rows:
        row.lease_until = lease_until
    await session.flush()
    return rows


# ---------------------------------------------------------------------------------------------
# Outbox


def _delivery_from_row(row: OutboxRow) -> Delivery:
    return Delivery(
        id=row.id,
        request_id=row.request_id,
        target=row.target,
        payload=dict(row.payload),
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        kind=row.kind,
        state=DeliveryState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )


class SqlOutbox:
    """`bot.ports.Outbox` on the `outbox` table. The outgoing `webhook-id` is the delivery id."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, delivery: Delivery) -> None:
        self._session.add(
            OutboxRow(
                id=delivery.id,
                request_id=delivery.request_id,
                target=delivery.target,
                kind=delivery.kind,
                payload=_plain_json(delivery.payload),
                webhook_id=delivery.id,
                state=delivery.state.value,
                attempts=delivery.attempts,
                next_attempt_at=delivery.next_attempt_at,
                lease_until=None,
                last_error=delivery.last_error,
                created_at=delivery.created_at,
                delivered_at=delivery.delivered_at,
            )
        )
        await self._session.flush()

    async def get_for_request(self, request_id: str) -> Sequence[Delivery]:
        rows = await self._session.scalars(
            select(OutboxRow)
            .where(OutboxRow.request_id == request_id)
            .order_by(OutboxRow.created_at, OutboxRow.id)
            .execution_options(populate_existing=True)
        )
        return [_delivery_from_row(row) for row in rows]

    async def count_for_request(self, request_id: str, kind: str) -> int:
        """How many deliveries of `kind` were ever queued for the request (progress budgets)."""
        count: int | None = await self._session.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.request_id == request_id, OutboxRow.kind == kind)
        )
        return count or 0

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> Sequence[Delivery]:
        """Pending deliveries due at `now` and not leased (or whose lease ran out), oldest due
        first, leased until `lease_until`. PostgreSQL skips rows another worker has locked
        (FOR UPDATE SKIP LOCKED); SQLite writers are serialised by the database write lock."""
        rows = await _claim_leased(
            self._session,
            OutboxRow,
            OutboxRow.next_attempt_at <= now,
            (OutboxRow.next_attempt_at, OutboxRow.id),
            pending=DeliveryState.PENDING.value,
            now=now,
            limit=limit,
            lease_until=lease_until,
        )
        return [_delivery_from_row(row) for row in rows]

    async def record_attempt(self, delivery: Delivery) -> None:
        """Persist the outcome of an attempt and release the lease."""
        await self._session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == delivery.id)
            .values(
                state=delivery.state.value,
                attempts=delivery.attempts,
                next_attempt_at=delivery.next_attempt_at,
                last_error=delivery.last_error,
                delivered_at=delivery.delivered_at,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )

    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery can next be claimed (its next attempt, or the end
        of its lease if a worker holds it); None when nothing is pending."""
        claimable_at = case(
            (OutboxRow.lease_until > OutboxRow.next_attempt_at, OutboxRow.lease_until),
            else_=OutboxRow.next_attempt_at,
        )
        earliest: datetime | None = await self._session.scalar(
            select(func.min(claimable_at)).where(OutboxRow.state == DeliveryState.PENDING.value)
        )
        return earliest


# ---------------------------------------------------------------------------------------------
# Processed webhooks


class SqlWebhookLog:
    """`bot.ports.WebhookLog` on `processed_webhooks`, keyed by (source, webhook_id)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, source: str, webhook_id: str) -> ProcessedWebhook | None:
        row = await self._session.get(ProcessedWebhookRow, (source, webhook_id))
        if row is None:
            return None
        return ProcessedWebhook(
            source=row.source,
            webhook_id=row.webhook_id,
            body_sha256=row.body_sha256,
            request_id=row.request_id,
            received_at=row.received_at,
        )

    async def add(self, record: ProcessedWebhook) -> None:
        """Raises ConcurrencyError when (source, webhook_id) was already recorded; the unit of
        work stays usable."""
        try:
            async with self._session.begin_nested():
                self._session.add(
                    ProcessedWebhookRow(
                        source=record.source,
                        webhook_id=record.webhook_id,
                        body_sha256=record.body_sha256,
                        request_id=record.request_id,
                        received_at=record.received_at,
                    )
                )
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise ConcurrencyError(
                    f"webhook {record.source}/{record.webhook_id} was already processed"
                ) from exc
            raise


# ---------------------------------------------------------------------------------------------
# Freezes and delegations


def _freeze_from_row(row: FreezeRow) -> Freeze:
    return Freeze(
        id=row.id,
        environments=tuple(row.environments),
        services=tuple(row.services),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
    )


class SqlFreezeRepository:
    """`bot.ports.FreezeRepository` on the `freezes` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, freeze: Freeze) -> None:
        self._session.add(
            FreezeRow(
                id=freeze.id,
                environments=list(freeze.environments),
                services=list(freeze.services),
                starts_at=freeze.starts_at,
                ends_at=freeze.ends_at,
                reason=freeze.reason,
                created_by=freeze.created_by,
                created_at=freeze.created_at,
                ended_at=freeze.ended_at,
                ended_by=freeze.ended_by,
            )
        )
        await self._session.flush()

    async def get(self, freeze_id: str) -> Freeze | None:
        row = await self._session.scalar(
            select(FreezeRow)
            .where(FreezeRow.id == freeze_id)
            .execution_options(populate_existing=True)
        )
        return None if row is None else _freeze_from_row(row)

    async def list_current(self, now: datetime) -> Sequence[Freeze]:
        """Freezes not ended early nor past their end at `now` (active or upcoming), by start."""
        rows = await self._session.scalars(
            select(FreezeRow)
            .where(
                (FreezeRow.ended_at.is_(None)) | (FreezeRow.ended_at > now),
                (FreezeRow.ends_at.is_(None)) | (FreezeRow.ends_at > now),
            )
            .order_by(FreezeRow.starts_at, FreezeRow.id)
            .execution_options(populate_existing=True)
        )
        return [_freeze_from_row(row) for row in rows]

    async def end(self, freeze_id: str, at: datetime, by: str) -> None:
        """End the freeze at `at`; a freeze that was already ended keeps its first end."""
        await self._session.execute(
            update(FreezeRow)
            .where(FreezeRow.id == freeze_id, FreezeRow.ended_at.is_(None))
            .values(ended_at=at, ended_by=by)
            .execution_options(synchronize_session=False)
        )


def _delegation_from_row(row: DelegationRow) -> Delegation:
    return Delegation(
        id=row.id,
        delegator=row.delegator,
        delegate=row.delegate,
        environments=tuple(row.environments),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _not_revoked(now: datetime) -> ColumnElement[bool]:
    return (DelegationRow.revoked_at.is_(None)) | (DelegationRow.revoked_at > now)


class SqlDelegationRepository:
    """`bot.ports.DelegationRepository` on the `delegations` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, delegation: Delegation) -> None:
        self._session.add(
            DelegationRow(
                id=delegation.id,
                delegator=delegation.delegator,
                delegate=delegation.delegate,
                environments=list(delegation.environments),
                starts_at=delegation.starts_at,
                ends_at=delegation.ends_at,
                created_at=delegation.created_at,
                revoked_at=delegation.revoked_at,
            )
        )
        await self._session.flush()

    async def list_active(self, now: datetime) -> Sequence[Delegation]:
        """Delegations in force at `now`: started, not yet ended, not revoked."""
        rows = await self._session.scalars(
            select(DelegationRow)
            .where(
                DelegationRow.starts_at <= now,
                DelegationRow.ends_at > now,
                _not_revoked(now),
            )
            .order_by(DelegationRow.starts_at, DelegationRow.id)
            .execution_options(populate_existing=True)
        )
        return [_delegation_from_row(row) for row in rows]

    async def list_by_delegator(self, delegator: str, now: datetime) -> Sequence[Delegation]:
        """The delegator's delegations that are active or upcoming at `now`, by start."""
        rows = await self._session.scalars(
            select(DelegationRow)
            .where(
                DelegationRow.delegator == delegator,
                DelegationRow.ends_at > now,
                _not_revoked(now),
            )
            .order_by(DelegationRow.starts_at, DelegationRow.id)
            .execution_options(populate_existing=True)
        )
        return [_delegation_from_row(row) for row in rows]

    async def revoke(self, delegation_id: str, at: datetime) -> None:
        """Revoke at `at`; an already revoked delegation keeps its first revocation time."""
        await self._session.execute(
            update(DelegationRow)
            .where(DelegationRow.id == delegation_id, DelegationRow.revoked_at.is_(None))
            .values(revoked_at=at)
            .execution_options(synchronize_session=False)
        )


# ---------------------------------------------------------------------------------------------
# Outgoing Slack messages


def _message_from_row(row: MessageRow) -> OutgoingMessage:
    return OutgoingMessage(
        id=row.id,
        dedupe_key=row.dedupe_key,
        channel=row.channel,
        text=row.text,
        created_at=row.created_at,
        not_before=row.not_before,
        request_id=row.request_id,
        dm=row.dm,
        thread_ts=row.thread_ts,
        blocks=tuple(dict(b) for b in row.blocks),
        state=MessageState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        sent_at=row.sent_at,
    )


class SqlMessageQueue:
    """`bot.ports.MessageQueue` on the `messages` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, message: OutgoingMessage) -> bool:
        """Queue `message`; False (and nothing written) when its dedupe_key was queued before."""
        exists = await self._session.scalar(
            select(MessageRow.id).where(MessageRow.dedupe_key == message.dedupe_key)
        )
        if exists is not None:
            return False
        try:
            async with self._session.begin_nested():
                self._session.add(
                    MessageRow(
                        id=message.id,
                        dedupe_key=message.dedupe_key,
                        request_id=message.request_id,
                        channel=message.channel,
                        dm=message.dm,
                        thread_ts=message.thread_ts,
                        text=message.text,
                        blocks=[_plain_json(b) for b in message.blocks],
                        state=message.state.value,
                        attempts=message.attempts,
                        not_before=message.not_before,
                        lease_until=None,
                        last_error=message.last_error,
                        created_at=message.created_at,
                        sent_at=message.sent_at,
                    )
                )
                await self._session.flush()
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                return False
            raise
        return True

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> Sequence[OutgoingMessage]:
        """Pending messages whose `not_before` has come, oldest first, leased until
        `lease_until` (FOR UPDATE SKIP LOCKED on PostgreSQL)."""
        rows = await _claim_leased(
            self._session,
            MessageRow,
            MessageRow.not_before <= now,
            (MessageRow.not_before, MessageRow.created_at, MessageRow.id),
            pending=MessageState.PENDING.value,
            now=now,
            limit=limit,
            lease_until=lease_until,
        )
        return [_message_from_row(row) for row in rows]

    async def record_attempt(self, message: OutgoingMessage) -> None:
        """Persist state, attempts, not_before, last_error and sent_at; release the lease."""
        await self._session.execute(
            update(MessageRow)
            .where(MessageRow.id == message.id)
            .values(
                state=message.state.value,
                attempts=message.attempts,
                not_before=message.not_before,
                last_error=message.last_error,
                sent_at=message.sent_at,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )

    async def count_pending(self) -> int:
        count: int | None = await self._session.scalar(
            select(func.count())
            .select_from(MessageRow)
            .where(MessageRow.state == MessageState.PENDING.value)
        )
        return count or 0
