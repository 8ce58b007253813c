"""Shared by the repositories: canonical JSON and the event hash, aware UTC times, Core
tables for hot paths, and the lease-claim query of the work queues."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.tables import Base, MessageRow, OutboxRow


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


_CANONICAL = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_json_default,
)
# Values that JSON holds as they are (exact types: an Enum or a float may change on the way).
_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 text, datetimes as ISO-8601 UTC."""
    return _CANONICAL.encode(value)


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
    copied = _plain_copy(dict(value))
    if copied is not _NOT_PLAIN:  # most values: the JSON round trip would change nothing
        plain: dict[str, Any] = copied
        return plain
    result: dict[str, Any] = json.loads(canonical_json(dict(value)))
    return result


_NOT_PLAIN: Any = object()


def _plain_copy(value: Any) -> Any:
    """A copy of `value` if it is made of JSON's own types only (exactly str, int, bool, None,
    and lists and str-keyed dicts of them), which JSON gives back unchanged; else _NOT_PLAIN."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if kind is list:
        items = [_plain_copy(item) for item in value]
        return _NOT_PLAIN if any(item is _NOT_PLAIN for item in items) else items
    if kind is dict:
        copied = {}
        for key, item in value.items():
            plain = _plain_copy(item)
            if type(key) is not str or plain is _NOT_PLAIN:
                return _NOT_PLAIN
            copied[key] = plain
        return copied
    return _NOT_PLAIN


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


async def _insert_unless_duplicate(session: AsyncSession, row: Base) -> bool:
    """Insert `row` in a savepoint; False (and the unit of work still usable) when a unique
    constraint says it is already there. Other integrity errors propagate."""
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            return False
        raise
    return True


def _table(model: type[Base]) -> Table:
    """The Core table of a mapped class: for the hot paths' executemany statements, which the
    ORM would route through its slower bulk machinery."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


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
