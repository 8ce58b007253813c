"""The `requests` table as `bot.ports.RequestRepository` (optimistic `revision` column)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from enum import Enum
from typing import Any, Final

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.model import (
    ApprovalRequest,
    Link,
    RejectMode,
    RequestDetails,
    Requester,
    RequestState,
    Risk,
    Rule,
)
from bot.ports import CardDue, ConcurrencyError, RequestLock, SyncedCard
from storage.repositories._common import _plain_json, _table
from storage.repositories._prepared import Prepared, PreparedLookup
from storage.tables import RequestRow

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
# Written only by `mark_cards_synced`, so that a save from a stale read cannot move the card back.
_CARD_FIELDS: Final = ("card_revision", "message_ts")


_UPDATES: dict[tuple[str, ...], Prepared] = {}
_REQUESTS = _table(RequestRow)
_LOCK = PreparedLookup(
    select(
        _REQUESTS.c.id,
        _REQUESTS.c.revision,
        _REQUESTS.c.channel,
        _REQUESTS.c.message_ts,
        _REQUESTS.c.card_revision,
    )
    .where(_REQUESTS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_REQUESTS.c.id)
    .with_for_update(),
    "ids",
)
# The only writer of the card position (`_CARD_FIELDS`, with `channel`).
_SYNC_CARD = Prepared(
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("b_id"), _REQUESTS.c.card_revision < bindparam("b_revision"))
    .values(
        card_revision=bindparam("b_revision"),
        channel=bindparam("b_channel"),
        message_ts=bindparam("b_ts"),
    )
)
_TOUCH = Prepared(
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("b_id"))
    .values(revision=_REQUESTS.c.revision + 1)
)


def _revision_update(names: tuple[str, ...]) -> Prepared:
    """`UPDATE requests SET <names> WHERE id = :b_id AND revision = :b_revision`, prepared
    once per set of columns (`save_many` writes either every domain column or a few)."""
    prepared = _UPDATES.get(names)
    if prepared is None:
        columns: dict[str, Any] = {n: bindparam(n) for n in names if not n.startswith("b_")}
        prepared = _UPDATES[names] = Prepared(
            update(_REQUESTS)
            .where(
                _REQUESTS.c.id == bindparam("b_id"),
                _REQUESTS.c.revision == bindparam("b_revision"),
            )
            .values(**columns)
        )
    return prepared


def _rules_to_json(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "team": r.team, "approvals": r.approvals, "origin": r.origin}
        | ({"excluded": list(r.excluded)} if r.excluded else {})
        | ({"widened_by": list(r.widened_by)} if r.widened_by else {})
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
            widened_by=tuple(r.get("widened_by", ())),  # absent before escalations widened rules
        )
        for r in value
    )


def _requester_to_json(requester: Requester) -> dict[str, Any]:
    return {
        "email": requester.email,
        "github": requester.github,
        "slack": requester.slack,
        "slack_user": requester.slack_user,
        "gitlab": requester.gitlab,
        "checking": requester.checking,
    }


def _requester_from_json(value: Mapping[str, Any]) -> Requester:
    return Requester(
        email=value.get("email"),
        github=value.get("github"),
        slack=value.get("slack"),
        slack_user=value.get("slack_user"),
        gitlab=value.get("gitlab"),
        checking=value.get("checking") is True,
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
        "requested_service": details.requested_service,
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
        requested_service=value.get("requested_service"),
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

    async def lock_many(self, request_ids: Sequence[str]) -> Mapping[str, RequestLock]:
        """Lock several requests (id order, FOR UPDATE on PostgreSQL) and return their current
        revisions and card positions, without loading the rest: a caller holding a copy at
        that revision can use it (with the card position read here)."""
        if not request_ids:
            return {}
        rows = await _LOCK.all(self._session, sorted(set(request_ids)))
        return {
            str(row[0]): RequestLock(
                revision=int(row[1]),
                channel=str(row[2]),
                message_ts=row[3],
                card_revision=int(row[4]),
            )
            for row in rows
        }

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
        # An UPDATE with a revision check, run as one executemany.
        result = await _revision_update(tuple(params[0])).execute_many(self._session, params)
        dialect = self._session.get_bind().dialect
        rowcount = getattr(result, "rowcount", -1)
        if dialect.supports_sane_multi_rowcount and rowcount != len(requests):
            raise ConcurrencyError("a request changed since it was read and locked")
        for request in requests:
            request.revision += 1

    async def touch_many(self, request_ids: Sequence[str]) -> None:
        """Bump the revision of each request (id order, so that two writers lock alike)."""
        ids = sorted(set(request_ids))
        if ids:
            await _TOUCH.execute_many(self._session, [{"b_id": request_id} for request_id in ids])

    async def save(self, request: ApprovalRequest) -> None:
        """Write back every domain field except the card position (see `mark_cards_synced`),
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

    async def list_cards_due(self, limit: int, *, skip: Collection[str] = ()) -> Sequence[CardDue]:
        """Requests whose card is not posted yet or shows an older revision, oldest first. A
        narrow read: the sweep picks which cards to draw now (paced ones are left for later)
        and loads only those."""
        table = _REQUESTS
        due = [
            CardDue(
                request_id=request_id,
                posted=message_ts is not None,
                open=state == RequestState.PENDING.value,
            )
            for request_id, message_ts, state in await self._session.execute(
                select(table.c.id, table.c.message_ts, table.c.state)
                .where(table.c.card_revision < table.c.revision)
                .order_by(table.c.created_at, table.c.id)
                .limit(limit + len(skip))  # at most len(skip) of them are left out
            )
        ]
        return [c for c in due if not (c.posted and c.open and c.request_id in skip)][:limit]

    async def mark_cards_synced(self, cards: Sequence[SyncedCard]) -> None:
        """Record each card's position and the revision it shows, in one executemany. Never
        goes back: a revision at or below the recorded one changes nothing. Does not bump
        `revision`."""
        if cards:
            await _SYNC_CARD.execute_many(
                self._session,
                [
                    {
                        "b_id": card.request_id,
                        "b_revision": card.revision,
                        "b_channel": card.channel,
                        "b_ts": card.message_ts,
                    }
                    for card in sorted(cards, key=lambda card: card.request_id)  # lock order
                ],
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
