"""Freeze evaluation: cron calendar windows across DST, overlapping freezes, service scopes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from bot.domain.freezes import (
    UNTIL_FURTHER_NOTICE,
    Cron,
    CronError,
    CronUnsupported,
    FreezeWindow,
    RecurringWindow,
    freeze_state,
    recurring_windows,
    window_of,
)
from bot.domain.model import Freeze
from bot.policy import Policy, PolicyError, load_policy

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
        ("0 18 * * */0", "day-of-week step must be at least 1"),
        ("0 18 LL * *", "day-of-month 'LL' is not supported"),
        ("0 18 L-2 * *", "day-of-month 'L-2' is not supported"),
        ("0 18 1-5W * *", "day-of-month '1-5W' is not supported"),
        ("0 18 32W * *", "day-of-month '32W' is out of range 1-31"),
        ("0 18 * * L", "day-of-week 'L' is not supported"),
        ("0 18 * * 5#6", "day-of-week '5#6': the week must be 1-5"),
        ("0 18 * * 8#1", "day-of-week '8#1' is out of range 0-7"),
        ("0 18 * * 1-5L", "day-of-week '1-5L' is not supported"),
        ("0 18 \u00b2 * *", "cannot read '\u00b2' in the day-of-month field"),
    ],
)
def test_cron_errors(cron: str, message: str) -> None:
    with pytest.raises(CronError, match=re.escape(message)):
        Cron.parse(cron)


def test_unsupported_syntax_is_its_own_error() -> None:
    with pytest.raises(CronUnsupported):
        Cron.parse("0 0 L-2 * *")
    with pytest.raises(CronError) as caught:
        Cron.parse("61 0 L * *")
    assert not isinstance(caught.value, CronUnsupported)


# L, W, # and ? as croniter reads them: month ends, leap years, and DST in the window's zone.
@pytest.mark.parametrize(
    ("cron", "zone", "start", "end", "expected"),
    [
        # L: the last day of each month, whatever its length.
        (
            "0 0 L * *",
            "UTC",
            utc(2026, 1, 1),
            utc(2026, 5, 1),
            [utc(2026, 1, 31), utc(2026, 2, 28), utc(2026, 3, 31), utc(2026, 4, 30)],
        ),
        # February's last day is the 29th in a leap year only.
        (
            "0 0 L 2 *",
            "UTC",
            utc(2027, 1, 1),
            utc(2029, 1, 1),
            [utc(2027, 2, 28), utc(2028, 2, 29)],
        ),
        ("0 0 29 2 *", "UTC", utc(2026, 1, 1), utc(2030, 1, 1), [utc(2028, 2, 29)]),
        # A list mixing L and a day.
        (
            "0 0 L,15 * *",
            "UTC",
            utc(2026, 2, 1),
            utc(2026, 3, 1),
            [utc(2026, 2, 15), utc(2026, 2, 28)],
        ),
        # #: the third Friday of each month.
        (
            "0 12 * * 5#3",
            "UTC",
            utc(2026, 1, 1),
            utc(2026, 4, 1),
            [utc(2026, 1, 16, 12), utc(2026, 2, 20, 12), utc(2026, 3, 20, 12)],
        ),
        # A fifth Friday only in months that have one.
        (
            "0 12 * * fri#5",
            "UTC",
            utc(2026, 1, 1),
            utc(2026, 6, 1),
            [utc(2026, 1, 30, 12), utc(2026, 5, 29, 12)],
        ),
        # 5L: the last Friday of the month.
        (
            "0 18 * * 5L",
            "UTC",
            utc(2026, 1, 1),
            utc(2026, 4, 1),
            [utc(2026, 1, 30, 18), utc(2026, 2, 27, 18), utc(2026, 3, 27, 18)],
        ),
        # LW: the last weekday; a month ending on a weekend moves back to Friday.
        (
            "0 9 LW * *",
            "UTC",
            utc(2026, 1, 1),
            utc(2026, 6, 1),
            [
                utc(2026, 1, 30, 9),  # the 31st is a Saturday
                utc(2026, 2, 27, 9),  # the 28th is a Saturday
                utc(2026, 3, 31, 9),
                utc(2026, 4, 30, 9),
                utc(2026, 5, 29, 9),  # the 31st is a Sunday
            ],
        ),
        # 1W never crosses into the previous month: Saturday 1 August → Monday 3 August.
        ("0 9 1W * *", "UTC", utc(2026, 7, 15), utc(2026, 9, 1), [utc(2026, 8, 3, 9)]),
        # 15W: a Saturday moves back to Friday, a Sunday on to Monday.
        (
            "0 9 15W 8,11 *",
            "UTC",
            utc(2026, 8, 1),
            utc(2026, 12, 1),
            [utc(2026, 8, 14, 9), utc(2026, 11, 16, 9)],
        ),
        # 31W: no day in a 30-day month; a Sunday the 31st moves back to Friday the 29th.
        ("0 9 31W * *", "UTC", utc(2026, 4, 1), utc(2026, 6, 1), [utc(2026, 5, 29, 9)]),
        # ?: any, as *.
        (
            "0 0 ? * mon",
            "UTC",
            utc(2026, 6, 1),
            utc(2026, 6, 16),
            [utc(2026, 6, 1), utc(2026, 6, 8), utc(2026, 6, 15)],
        ),
        # Both day fields restricted: the last day or a Monday (Vixie cron).
        (
            "0 0 L * 1",
            "UTC",
            utc(2026, 6, 1),
            utc(2026, 7, 1),
            [utc(2026, 6, d) for d in (1, 8, 15, 22, 29, 30)],
        ),
        # DST: the last Sunday of March is the spring-forward day in London; 01:30 is skipped
        # and lands just after the gap (02:30 BST = 01:30 UTC), once.
        (
            "30 1 * 3 0L",
            "Europe/London",
            utc(2026, 3, 1),
            utc(2026, 4, 1),
            [utc(2026, 3, 29, 1, 30)],
        ),
        # The last Sunday of October: 01:30 happens twice; the first (BST) occurrence counts.
        (
            "30 1 * 10 sunL",
            "Europe/London",
            utc(2026, 10, 1),
            utc(2026, 11, 1),
            [utc(2026, 10, 25, 0, 30)],
        ),
        # Month ends on either side of a change keep their wall time: 18:00 BST, then 18:00 GMT.
        (
            "0 18 L 3,10 *",
            "Europe/London",
            utc(2026, 1, 1),
            utc(2027, 1, 1),
            [utc(2026, 3, 31, 17), utc(2026, 10, 31, 18)],
        ),
        # The month end is the zone's: 31 January 23:30 in New York is 1 February in UTC.
        (
            "30 23 L 1 *",
            "America/New_York",
            utc(2026, 1, 1),
            utc(2026, 3, 1),
            [utc(2026, 2, 1, 4, 30)],
        ),
    ],
)
def test_cron_extensions(
    cron: str, zone: str, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    assert list(Cron.parse(cron).occurrences(ZoneInfo(zone), start, end)) == expected


def test_a_month_end_window_freezes() -> None:
    month_end = RecurringWindow(
        name="month-end",
        environments=("production",),
        services=(),
        cron="0 0 L * *",
        zone="UTC",
        duration=timedelta(days=1),
        reason="Month-end close",
    )
    now = utc(2028, 2, 29, 12)
    state = freeze_state(recurring_windows([month_end], now, now), "production", None, now)
    assert state.frozen
    assert state.until == utc(2028, 3, 1)
    before = utc(2028, 2, 28, 12)
    assert not freeze_state(
        recurring_windows([month_end], before, before), "production", None, before
    ).frozen


@pytest.mark.parametrize(
    "cron",
    ["0 0 L * *", "0 12 * * 5#3", "0 9 LW * *", "0 9 15W * *", "0 0 ? * 5L", "0 12 * * FRI#3"],
)
def test_the_loader_accepts_what_the_matcher_evaluates(cron: str) -> None:
    policy = Policy.model_validate(_policy_with(cron))
    assert policy.freezes[0].cron == cron


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        (
            "0 0 L-2 * *",
            "quorum.yml: freezes[0].cron: invalid cron expression '0 0 L-2 * *': day-of-month "
            "'L-2' is not supported (supported: numbers, ranges, steps, L for the last day of the "
            "month, 15W for the weekday nearest the 15th, LW for the last weekday)",
        ),
        (
            "0 0 * * L",
            "quorum.yml: freezes[0].cron: invalid cron expression '0 0 * * L': day-of-week 'L' "
            "is not supported (supported: numbers, names, ranges, steps, 5#3 for the third "
            "Friday, 5L for the last Friday of the month)",
        ),
        (
            "0 0 * * 5#6",
            "quorum.yml: freezes[0].cron: invalid cron expression '0 0 * * 5#6': a field is "
            "malformed or out of range (minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, "
            "day-of-week 0-6)",
        ),
    ],
)
def test_the_loader_refuses_what_the_matcher_cannot_evaluate(
    tmp_path: Path, cron: str, message: str
) -> None:
    path = tmp_path / "quorum.yml"
    path.write_text(yaml.safe_dump(_policy_with(cron)), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.errors == [message.replace("quorum.yml", str(path), 1)]


def _policy_with(cron: str) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"channel": "C0DEPLOYS"},
        "teams": {"web": {"channel": "C0WEB", "members": ["U0WEB1", "U0WEB2"]}},
        "services": {"storefront": {"owner": "web"}},
        "environments": {
            "production": {"rules": [{"name": "owner-review", "from": "owner", "approvals": 1}]}
        },
        "freezes": [{"name": "close", "cron": cron, "duration": "1d", "reason": "Month-end close"}],
    }


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
