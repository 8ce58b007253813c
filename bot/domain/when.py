"""Times people type in Slack (`for 2h`, `until tomorrow 09:00`, `until mon 09:00`), resolved to
UTC in the typing person's time zone. Pure: `now` and the zone are passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class ForDuration:
    """`for 2h`: from now."""

    duration: timedelta


@dataclass(frozen=True, slots=True)
class AtTime:
    """`until <day> <time>`. Exactly one of `on` (a date), `weekday` (0 = Monday) or
    `days_ahead` (0 today, 1 tomorrow) names the day; none of them: today, or tomorrow when
    `at` has already passed today."""

    at: time
    on: date | None = None
    weekday: int | None = None
    days_ahead: int | None = None


TimeSpec = ForDuration | AtTime


def resolve(spec: TimeSpec, now: datetime, zone: tzinfo) -> datetime:
    """The UTC instant `spec` means when typed at `now` by someone living in `zone`.

    A wall time that does not exist (skipped by a DST change) lands after the gap, and an
    ambiguous one (repeated) means its first occurrence, as zoneinfo resolves `fold=0`.
    """
    if isinstance(spec, ForDuration):
        return now + spec.duration
    local_now = now.astimezone(zone)
    today = local_now.date()
    if spec.on is not None:
        day = spec.on
    elif spec.days_ahead is not None:
        day = today + timedelta(days=spec.days_ahead)
    elif spec.weekday is not None:
        ahead = (spec.weekday - today.weekday()) % 7
        day = today + timedelta(days=ahead)
        if _instant(day, spec.at, zone) <= now:
            day += timedelta(days=7)
    else:
        day = today
        if _instant(day, spec.at, zone) <= now:
            day += timedelta(days=1)
    return _instant(day, spec.at, zone)


def _instant(day: date, at: time, zone: tzinfo) -> datetime:
    local = datetime.combine(day, at, tzinfo=zone)
    # Round-trip through UTC so a wall time inside a DST gap is normalised to a real instant.
    return local.astimezone(UTC)


def describe(at: datetime, zone: tzinfo, now: datetime) -> str:
    """`Mon 09:00 GMT` within the coming week, `Mon 2026-12-07 09:00 GMT` further away or in the
    past; shown in `zone`."""
    local = at.astimezone(zone)
    label = local.strftime("%Z") or "UTC"
    if now <= at < now + timedelta(days=6):
        return f"{local:%a %H:%M} {label}"
    return f"{local:%a %Y-%m-%d %H:%M} {label}"
