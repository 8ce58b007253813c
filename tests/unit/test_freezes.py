"""Freeze evaluation: cron calendar windows across DST, overlapping freezes, service scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.freezes import (
    UNTIL_FURTHER_NOTICE,
    Cron,
    CronError,
    FreezeWindow,
    RecurringWindow,
    freeze_state,
    recurring_windows,
    window_of,
)
from bot.domain.model import Freeze

LONDON = ZoneInfo("Europe/London")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def window(
    wid: str,
    start: datetime,
    end: datetime | None,
    *,
    envs: tuple[str, ...] = ("production",),
    services: tuple[str, ...] = (),
) -> FreezeWindow:
    return FreezeWindow(wid, envs, services, start, end, f"reason {wid}", created_by="U0RM1")


@pytest.mark.parametrize(
    ("cron", "zone", "start", "end", "expected"),
    [
        # 18:00 London wall time is 18:00 UTC in winter and 17:00 UTC in summer.
        (
            "0 18 * * *",
            "Europe/London",
            utc(2026, 3, 27, 0, 0),
            utc(2026, 3, 31, 0, 0),
            [
                utc(2026, 3, 27, 18),
                utc(2026, 3, 28, 18),
                utc(2026, 3, 29, 17),
                utc(2026, 3, 30, 17),
            ],
        ),
        # Autumn: back to GMT on Sunday 25 October 2026.
        (
            "30 9 * * sun",
            "Europe/London",
            utc(2026, 10, 17, 0, 0),
            utc(2026, 11, 2, 0, 0),
            [utc(2026, 10, 18, 8, 30), utc(2026, 10, 25, 9, 30), utc(2026, 11, 1, 9, 30)],
        ),
        # The policy example: quarter-end close.
        (
            "0 18 28 3,6,9,12 *",
            "Europe/London",
            utc(2026, 1, 1),
            utc(2027, 1, 1),
            [
                utc(2026, 3, 28, 18),
                utc(2026, 6, 28, 17),
                utc(2026, 9, 28, 17),
                utc(2026, 12, 28, 18),
            ],
        ),
        # Both day fields restricted: either matches (Vixie cron).
        (
            "0 0 1 * mon",
            "UTC",
            utc(2026, 6, 1),
            utc(2026, 6, 16),
            [utc(2026, 6, 1), utc(2026, 6, 8), utc(2026, 6, 15)],
        ),
        (
            "*/20 9-10 * jan-feb 1-5",
            "UTC",
            utc(2026, 1, 5, 9),
            utc(2026, 1, 5, 10, 30),
            [
                utc(2026, 1, 5, 9),
                utc(2026, 1, 5, 9, 20),
                utc(2026, 1, 5, 9, 40),
                utc(2026, 1, 5, 10),
                utc(2026, 1, 5, 10, 20),
            ],
        ),
        ("@weekly", "UTC", utc(2026, 6, 1), utc(2026, 6, 15), [utc(2026, 6, 7), utc(2026, 6, 14)]),
        # 01:30 does not exist on the spring-forward day; it lands after the gap, once.
        (
            "30 1 29 3 *",
            "Europe/London",
            utc(2026, 3, 1),
            utc(2026, 4, 1),
            [utc(2026, 3, 29, 1, 30)],
        ),
        # 01:30 happens twice on the fall-back day; the first (BST) occurrence counts.
        (
            "30 1 25 10 *",
            "Europe/London",
            utc(2026, 10, 1),
            utc(2026, 11, 1),
            [utc(2026, 10, 25, 0, 30)],
        ),
    ],
)
def test_cron_occurrences(
    cron: str, zone: str, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    assert list(Cron.parse(cron).occurrences(ZoneInfo(zone), start, end)) == expected


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 18 * *", "expected 5 fields"),
        ("61 * * * *", "minute '61' is out of range 0-59"),
        ("0 18 L * *", "cannot read 'l' in the day-of-month field"),
        ("0 18 * * */0", "day-of-week step must be at least 1"),
    ],
)
def test_cron_errors(cron: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        Cron.parse(cron)


QUARTER_END = RecurringWindow(
    name="quarter-end",
    environments=("production",),
    services=(),
    cron="0 18 28 3,6,9,12 *",
    zone="Europe/London",
    duration=timedelta(hours=96),
    reason="Quarter-end financial close",
)


@pytest.mark.parametrize(
    ("now", "frozen", "until"),
    [
        (utc(2026, 3, 28, 17, 59), False, None),
        (utc(2026, 3, 28, 18, 0), True, utc(2026, 4, 1, 18, 0)),
        # Across the DST change the window still lasts 96 real hours from 18:00 GMT.
        (utc(2026, 4, 1, 17, 59), True, utc(2026, 4, 1, 18, 0)),
        (utc(2026, 4, 1, 18, 0), False, None),
        # Summer occurrence starts at 18:00 BST = 17:00 UTC.
        (utc(2026, 6, 28, 17, 0), True, utc(2026, 7, 2, 17, 0)),
    ],
)
def test_recurring_window_across_dst(now: datetime, frozen: bool, until: datetime | None) -> None:
    windows = recurring_windows([QUARTER_END], now, now + timedelta(days=8))
    state = freeze_state(windows, "production", "storefront", now)
    assert state.frozen is frozen
    assert state.until == until
    assert not freeze_state(windows, "staging", "storefront", now).frozen


def test_a_window_running_at_the_start_is_found() -> None:
    now = utc(2026, 3, 30, 12)
    windows = recurring_windows([QUARTER_END], now, now + timedelta(hours=1))
    assert [w.starts_at for w in windows] == [utc(2026, 3, 28, 18)]
    assert windows[0].recurring == "quarter-end"
    assert windows[0].created_by is None


NOW = utc(2026, 5, 5, 12)


@pytest.mark.parametrize(
    ("windows", "env", "service", "frozen_by", "until"),
    [
        ([], "production", "storefront", [], None),
        # Overlapping freezes compose: the stretch lasts until the last one ends.
        (
            [
                window("a", NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
                window("b", NOW - timedelta(minutes=5), NOW + timedelta(hours=3)),
            ],
            "production",
            "storefront",
            ["a", "b"],
            NOW + timedelta(hours=3),
        ),
        # A freeze that starts exactly when the running one ends chains on to it.
        (
            [
                window("a", NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
                window("b", NOW + timedelta(hours=1), NOW + timedelta(hours=5)),
            ],
            "production",
            "storefront",
            ["a"],
            NOW + timedelta(hours=5),
        ),
        # A gap between them does not.
        (
            [
                window("a", NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
                window("b", NOW + timedelta(hours=2), NOW + timedelta(hours=5)),
            ],
            "production",
            "storefront",
            ["a"],
            NOW + timedelta(hours=1),
        ),
        # No end: until further notice.
        (
            [
                window("a", NOW - timedelta(hours=1), None),
                window("b", NOW, NOW + timedelta(hours=1)),
            ],
            "production",
            "storefront",
            ["a", "b"],
            UNTIL_FURTHER_NOTICE,
        ),
        # Not started yet, or already over.
        ([window("a", NOW + timedelta(minutes=1), None)], "production", "storefront", [], None),
        ([window("a", NOW - timedelta(hours=2), NOW)], "production", "storefront", [], None),
        # Service scope: only the named services, never an unknown (None) service.
        (
            [window("a", NOW, None, services=("vault",))],
            "production",
            "vault",
            ["a"],
            UNTIL_FURTHER_NOTICE,
        ),
        ([window("a", NOW, None, services=("vault",))], "production", "storefront", [], None),
        ([window("a", NOW, None, services=("vault",))], "production", None, [], None),
        ([window("a", NOW, None, envs=())], "production", None, ["a"], UNTIL_FURTHER_NOTICE),
        # Environment scope.
        ([window("a", NOW, None)], "staging", "storefront", [], None),
        ([window("a", NOW, None, envs=())], "staging", "storefront", ["a"], UNTIL_FURTHER_NOTICE),
    ],
)
def test_freeze_state_composes(
    windows: list[FreezeWindow],
    env: str,
    service: str | None,
    frozen_by: list[str],
    until: datetime | None,
) -> None:
    state = freeze_state(windows, env, service, NOW)
    assert [w.id for w in state.windows] == frozen_by
    assert state.until == until


def test_ending_a_freeze_early_cuts_its_window() -> None:
    freeze = Freeze(
        id="frz_1",
        environments=("production",),
        services=(),
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=4),
        reason="close",
        created_by="U0RM1",
        created_at=NOW - timedelta(hours=1),
        ended_at=NOW - timedelta(minutes=1),
        ended_by="U0RM2",
    )
    assert window_of(freeze).ends_at == NOW - timedelta(minutes=1)
    assert not freeze_state([window_of(freeze)], "production", "storefront", NOW).frozen


def test_the_primary_window_is_the_longest() -> None:
    windows = [
        window("short", NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
        window("long", NOW - timedelta(minutes=1), NOW + timedelta(days=1)),
    ]
    primary = freeze_state(windows, "production", "storefront", NOW).primary
    assert primary is not None
    assert primary.id == "long"
