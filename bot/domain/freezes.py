"""Which freezes apply to an (environment, service) at `now`: ad-hoc freezes and the policy's
recurring calendar windows, composed (overlapping or touching windows chain into one freeze).

Recurring windows are evaluated here with a small 5-field cron matcher of our own rather than
croniter, so this module stays pure and its DST behaviour is explicit: a cron expression names
*wall-clock* times in the window's zone; each matching local minute becomes one instant through
zoneinfo (`fold=0`: an ambiguous time means its first occurrence, a time skipped by DST lands
just after the gap), so `0 18 * * *` in Europe/London starts at 18:00 local all year round.
The policy loader validates expressions with this same parser (`Cron.parse`), so an expression
`check-config` accepts is one the sweep can evaluate.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.domain.model import Freeze

# A freeze with no end stays until someone ends it; requests record this as `frozen_until`.
UNTIL_FURTHER_NOTICE = datetime(9999, 12, 31, tzinfo=UTC)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class CronError(ValueError):
    """A cron expression this matcher cannot read (the message says which part)."""


class CronUnsupported(CronError):
    """Cron syntax some tools accept but this matcher does not evaluate (e.g. `L-2`)."""


_NEAREST = re.compile(r"([0-9]{1,2})w")  # 15W: the weekday nearest the 15th
_NTH = re.compile(r"([a-z0-9]+)#([0-9])")  # 5#3: the third Friday
_LAST_OF = re.compile(r"([a-z0-9]+)l")  # 5L: the last Friday


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed 5-field cron expression (minute hour day-of-month month day-of-week).

    Beyond numbers, ranges, steps, lists and names: `L` (last day of the month), `15W` (the
    weekday nearest the 15th, within the month), `LW` (the last weekday of the month) and `?`
    (any) in day-of-month; `5#3` (the third Friday), `5L` (the last Friday) and `?` in
    day-of-week."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday (7 is folded to 0)
    days_restricted: bool
    weekdays_restricted: bool
    last_day: bool = False  # L
    last_workday: bool = False  # LW
    nearest_workday: frozenset[int] = frozenset()  # 15W → {15}
    nth_weekdays: frozenset[tuple[int, int]] = frozenset()  # 5#3 → {(5, 3)}
    last_weekdays: frozenset[int] = frozenset()  # 5L → {5}

    @staticmethod
    def parse(expression: str) -> Cron:
        text = _MACROS.get(expression.strip().lower(), expression)
        fields = text.split()
        if len(fields) != 5:
            raise CronError(f"cron expression {expression!r}: expected 5 fields")
        minute, hour, day, month, weekday = ("*" if f == "?" else f for f in fields)
        days = _DayOfMonth.parse(day)
        weekdays = _DayOfWeek.parse(weekday)
        return Cron(
            minutes=_field(minute, 0, 59, (), "minute"),
            hours=_field(hour, 0, 23, (), "hour"),
            days=days.plain,
            months=_field(month, 1, 12, _MONTHS, "month", offset=1),
            weekdays=weekdays.plain,
            days_restricted=not day.startswith("*"),
            weekdays_restricted=not weekday.startswith("*"),
            last_day=days.last,
            last_workday=days.last_workday,
            nearest_workday=days.nearest,
            nth_weekdays=weekdays.nth,
            last_weekdays=weekdays.last,
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = self._in_days(day)
        in_weekdays = self._in_weekdays(day)
        # Vixie cron: when both day fields are restricted, either one matching is enough.
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def _in_days(self, day: date) -> bool:
        last = _month_length(day)
        return (
            day.day in self.days
            or (self.last_day and day.day == last)
            or (self.last_workday and day.day == _nearest_workday(day, last, last))
            or any(day.day == _nearest_workday(day, n, last) for n in self.nearest_workday)
        )

    def _in_weekdays(self, day: date) -> bool:
        weekday = day.isoweekday() % 7
        return (
            weekday in self.weekdays
            or (weekday, (day.day - 1) // 7 + 1) in self.nth_weekdays
            or (weekday in self.last_weekdays and day.day + 7 > _month_length(day))
        )

    def occurrences(self, zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
        """The instants in [start, end) whose wall time in `zone` matches, in order (UTC)."""
        day = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date() + timedelta(days=1)
        times = sorted(time(h, m) for h in self.hours for m in self.minutes)
        seen: set[datetime] = set()
        while day <= last:
            if self.matches_day(day):
                for at in times:
                    instant = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
                    if start <= instant < end and instant not in seen:
                        seen.add(instant)
                        yield instant
            day += timedelta(days=1)


def _month_length(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _nearest_workday(day: date, target: int, last: int) -> int:
    """The day of `day`'s month that `targetW` names: the Monday-to-Friday day nearest the
    `target`th, never crossing into another month; 0 (no day) when the month is shorter."""
    if target > last:
        return 0
    weekday = date(day.year, day.month, target).weekday()  # 5 = Saturday, 6 = Sunday
    if weekday == 5:
        return target - 1 if target > 1 else target + 2
    if weekday == 6:
        return target + 1 if target < last else target - 2
    return target


@dataclass(frozen=True, slots=True)
class _DayOfMonth:
    plain: frozenset[int]
    last: bool
    last_workday: bool
    nearest: frozenset[int]

    @staticmethod
    def parse(text: str) -> _DayOfMonth:
        plain: list[str] = []
        last = last_workday = False
        nearest: set[int] = set()
        for part in text.split(","):
            low = part.lower()
            if low == "l":
                last = True
            elif low == "lw":
                last_workday = True
            elif match := _NEAREST.fullmatch(low):
                n = int(match.group(1))
                if not 1 <= n <= 31:
                    raise CronError(f"day-of-month {part!r} is out of range 1-31")
                nearest.add(n)
            elif "l" in low or "w" in low:
                raise CronUnsupported(
                    f"day-of-month {part!r} is not supported (supported: numbers, ranges, "
                    "steps, L for the last day of the month, 15W for the weekday nearest the "
                    "15th, LW for the last weekday)"
                )
            else:
                plain.append(part)
        days = _field(",".join(plain), 1, 31, (), "day-of-month") if plain else frozenset()
        return _DayOfMonth(days, last, last_workday, frozenset(nearest))


@dataclass(frozen=True, slots=True)
class _DayOfWeek:
    plain: frozenset[int]
    nth: frozenset[tuple[int, int]]
    last: frozenset[int]

    @staticmethod
    def parse(text: str) -> _DayOfWeek:
        plain: list[str] = []
        nth: set[tuple[int, int]] = set()
        last: set[int] = set()
        for part in text.split(","):
            low = part.lower()
            if match := _NTH.fullmatch(low):
                weekday, n = _weekday(match.group(1), part), int(match.group(2))
                if not 1 <= n <= 5:
                    raise CronError(f"day-of-week {part!r}: the week must be 1-5")
                nth.add((weekday, n))
            elif match := _LAST_OF.fullmatch(low):
                last.add(_weekday(match.group(1), part))
            elif "#" in low or "l" in low:
                raise CronUnsupported(
                    f"day-of-week {part!r} is not supported (supported: numbers, names, ranges, "
                    "steps, 5#3 for the third Friday, 5L for the last Friday of the month)"
                )
            else:
                plain.append(part)
        weekdays = _field(",".join(plain), 0, 7, _DAYS, "day-of-week") if plain else frozenset()
        return _DayOfWeek(frozenset(d % 7 for d in weekdays), frozenset(nth), frozenset(last))


def _weekday(text: str, part: str) -> int:
    day = _number(text, _DAYS, 0, "day-of-week")
    if not 0 <= day <= 7:
        raise CronError(f"day-of-week {part!r} is out of range 0-7")
    return day % 7


def _field(
    text: str, low: int, high: int, names: Sequence[str], what: str, *, offset: int = 0
) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        base, _, step_text = part.partition("/")
        step = _number(step_text, names, offset, what) if step_text else 1
        if step < 1:
            raise CronError(f"{what} step must be at least 1 in {text!r}")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _number(a, names, offset, what), _number(b, names, offset, what)
        else:
            first = _number(base, names, offset, what)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise CronError(f"{what} {part!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, names: Sequence[str], offset: int, what: str) -> int:
    if text in names:
        return names.index(text) + offset
    if not (text.isascii() and text.isdigit()):
        raise CronError(f"cannot read {text!r} in the {what} field")
    return int(text)


# --- windows -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecurringWindow:
    """A recurring freeze of the policy (`freezes:`), as plain data."""

    name: str
    environments: tuple[str, ...]
    services: tuple[str, ...]
    cron: str
    zone: str
    duration: timedelta
    reason: str


@dataclass(frozen=True, slots=True)
class FreezeWindow:
    """One period during which deployments in scope are frozen: an ad-hoc freeze, or one
    occurrence of a recurring window (`recurring` is its name; `created_by` is then None)."""

    id: str
    environments: tuple[str, ...]  # empty: every environment
    services: tuple[str, ...]  # empty: every service
    starts_at: datetime
    ends_at: datetime | None  # None: until someone ends it
    reason: str
    created_by: str | None = None
    recurring: str | None = None

    def applies_to(self, environment: str, service: str | None) -> bool:
        """Whether the window covers a deployment of `service` (None: unknown) to `environment`.
        A window scoped to named services does not cover a service the policy does not know."""
        if self.environments and environment not in self.environments:
            return False
        return not self.services or (service is not None and service in self.services)

    def active_at(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)


def window_of(freeze: Freeze) -> FreezeWindow:
    """An ad-hoc freeze as a window; ending it early cuts the window at `ended_at`."""
    ends = freeze.ends_at
    if freeze.ended_at is not None and (ends is None or freeze.ended_at < ends):
        ends = freeze.ended_at
    return FreezeWindow(
        id=freeze.id,
        environments=freeze.environments,
        services=freeze.services,
        starts_at=freeze.starts_at,
        ends_at=ends,
        reason=freeze.reason,
        created_by=freeze.created_by,
    )


def recurring_windows(
    recurring: Iterable[RecurringWindow], start: datetime, end: datetime
) -> list[FreezeWindow]:
    """Occurrences of the recurring windows that overlap [start, end), by start.

    Raises CronError for an expression this matcher cannot read.
    """
    found: list[FreezeWindow] = []
    for window in recurring:
        cron = Cron.parse(window.cron)
        # An occurrence that began up to `duration` before `start` is still running at `start`.
        for begins in cron.occurrences(ZoneInfo(window.zone), start - window.duration, end):
            found.append(
                FreezeWindow(
                    id=f"{window.name}@{begins:%Y-%m-%dT%H:%MZ}",
                    environments=window.environments,
                    services=window.services,
                    starts_at=begins,
                    ends_at=begins + window.duration,
                    reason=window.reason,
                    recurring=window.name,
                )
            )
    return sorted(found, key=lambda w: (w.starts_at, w.id))


@dataclass(frozen=True, slots=True)
class FreezeState:
    """The freeze of one (environment, service) at `now`. `until` is when it is lifted:
    overlapping and back-to-back windows chain, so it is the end of the whole frozen stretch
    (UNTIL_FURTHER_NOTICE when a window in it has no end)."""

    windows: tuple[FreezeWindow, ...]  # the windows active at `now`, earliest start first
    until: datetime | None

    @property
    def frozen(self) -> bool:
        return bool(self.windows)

    @property
    def primary(self) -> FreezeWindow | None:
        """The active window that lasts longest (the one worth naming on a card)."""
        if not self.windows:
            return None
        return max(self.windows, key=lambda w: w.ends_at or UNTIL_FURTHER_NOTICE)


def freeze_state(
    windows: Iterable[FreezeWindow], environment: str, service: str | None, now: datetime
) -> FreezeState:
    """Compose every window covering (environment, service) into the freeze at `now`."""
    relevant = sorted(
        (w for w in windows if w.applies_to(environment, service)), key=lambda w: w.starts_at
    )
    active = tuple(w for w in relevant if w.active_at(now))
    if not active:
        return FreezeState(windows=(), until=None)
    until = max(w.ends_at or UNTIL_FURTHER_NOTICE for w in active)
    # Extend through windows that start before (or exactly when) the stretch would end.
    changed = True
    while changed and until < UNTIL_FURTHER_NOTICE:
        changed = False
        for w in relevant:
            end = w.ends_at or UNTIL_FURTHER_NOTICE
            if w.starts_at <= until < end:
                until, changed = end, True
    return FreezeState(windows=active, until=until)


def upcoming(windows: Iterable[FreezeWindow], now: datetime) -> list[FreezeWindow]:
    """Windows active at `now` or starting later, by start (for `/freeze list`)."""
    return sorted(
        (w for w in windows if w.ends_at is None or w.ends_at > now),
        key=lambda w: (w.starts_at, w.id),
    )
