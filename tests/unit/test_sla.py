"""The SLA ladder and business-hours arithmetic (bot/domain/sla.py), table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.sla import (
    BusinessHours,
    EscalationStep,
    ExpireAction,
    SlaSpec,
    Step,
    StepKind,
    add_business_time,
    business_time_between,
    next_step,
    next_timer_text,
)

LONDON = ZoneInfo("Europe/London")
WEEKDAYS_9_TO_5 = BusinessHours(
    days=frozenset(range(5)), start=time(9), end=time(17), zone="Europe/London"
)
EVERY_DAY_9_TO_5 = BusinessHours(
    days=frozenset(range(7)), start=time(9), end=time(17), zone="Europe/London"
)


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


H, M = timedelta(hours=1), timedelta(minutes=1)

# 2026: clocks go forward on Sunday 29 March, back on Sunday 25 October (Europe/London).
ADD_CASES = [
    ("wall clock", utc(2026, 3, 27, 18), 1 * H, None, utc(2026, 3, 27, 19)),
    ("inside a window", london(2026, 3, 24, 10), 2 * H, WEEKDAYS_9_TO_5, london(2026, 3, 24, 12)),
    (
        "a window's end is a deadline",
        london(2026, 3, 24, 9),
        8 * H,
        WEEKDAYS_9_TO_5,
        london(2026, 3, 24, 17),
    ),
    ("before opening", london(2026, 3, 24, 7), 30 * M, WEEKDAYS_9_TO_5, london(2026, 3, 24, 9, 30)),
    (
        "Friday evening waits for Monday",
        london(2026, 3, 20, 18),
        1 * H,
        WEEKDAYS_9_TO_5,
        london(2026, 3, 23, 10),
    ),
    (
        "Friday afternoon spills into Monday",
        london(2026, 3, 20, 16, 30),
        1 * H,
        WEEKDAYS_9_TO_5,
        london(2026, 3, 23, 9, 30),
    ),
    (
        "across spring-forward weekend",
        london(2026, 3, 27, 15),
        4 * H,
        WEEKDAYS_9_TO_5,
        utc(2026, 3, 30, 10),
    ),  # 2 h on Friday (GMT) + 2 h from Monday 09:00 BST = 08:00 UTC
    (
        "across fall-back weekend",
        london(2026, 10, 23, 15),
        4 * H,
        WEEKDAYS_9_TO_5,
        utc(2026, 10, 26, 11),
    ),  # 2 h on Friday (BST) + 2 h from Monday 09:00 GMT = 09:00 UTC
    (
        "on the spring-forward Sunday",
        utc(2026, 3, 29, 0),
        8 * H,
        EVERY_DAY_9_TO_5,
        utc(2026, 3, 29, 16),
    ),  # 09:00-17:00 BST is 08:00-16:00 UTC: still 8 h
    (
        "on the fall-back Sunday",
        utc(2026, 10, 25, 0),
        8 * H,
        EVERY_DAY_9_TO_5,
        utc(2026, 10, 25, 17),
    ),
]


@pytest.mark.parametrize(
    ("start", "delta", "hours", "expected"),
    [case[1:] for case in ADD_CASES],
    ids=[case[0] for case in ADD_CASES],
)
def test_add_business_time(
    start: datetime, delta: timedelta, hours: BusinessHours | None, expected: datetime
) -> None:
    assert add_business_time(start, delta, hours) == expected


BETWEEN_CASES = [
    ("wall clock", utc(2026, 3, 27, 18), utc(2026, 3, 28, 18), None, 24 * H),
    ("backwards is zero", utc(2026, 3, 28), utc(2026, 3, 27), WEEKDAYS_9_TO_5, timedelta(0)),
    (
        "a weekend is nothing",
        london(2026, 3, 27, 17),
        london(2026, 3, 30, 9),
        WEEKDAYS_9_TO_5,
        timedelta(0),
    ),
    ("spring-forward Sunday is 8 h", utc(2026, 3, 29), utc(2026, 3, 30), EVERY_DAY_9_TO_5, 8 * H),
    ("fall-back Sunday is 8 h", utc(2026, 10, 25), utc(2026, 10, 26), EVERY_DAY_9_TO_5, 8 * H),
    ("a working week", london(2026, 3, 23, 0), london(2026, 3, 30, 0), WEEKDAYS_9_TO_5, 40 * H),
    ("partial windows", london(2026, 3, 24, 16), london(2026, 3, 25, 10), WEEKDAYS_9_TO_5, 2 * H),
    # 00:30 GMT to 03:00 BST on the night the clocks change is 1.5 h of real time.
    (
        "a window across the change itself",
        utc(2026, 3, 29),
        utc(2026, 3, 29, 12),
        BusinessHours(frozenset(range(7)), time(0, 30), time(3), "Europe/London"),
        90 * M,
    ),
]


@pytest.mark.parametrize(
    ("a", "b", "hours", "expected"),
    [case[1:] for case in BETWEEN_CASES],
    ids=[case[0] for case in BETWEEN_CASES],
)
def test_business_time_between(
    a: datetime, b: datetime, hours: BusinessHours | None, expected: timedelta
) -> None:
    assert business_time_between(a, b, hours) == expected


def test_business_time_round_trips() -> None:
    start = london(2026, 3, 26, 11)
    for delta in (1 * H, 6 * H, 9 * H, 17 * H, 33 * H):
        due = add_business_time(start, delta, WEEKDAYS_9_TO_5)
        assert business_time_between(start, due, WEEKDAYS_9_TO_5) == delta


def test_business_hours_need_a_window() -> None:
    with pytest.raises(ValueError, match="start before end"):
        BusinessHours(frozenset(), time(9), time(17))
    with pytest.raises(ValueError, match="start before end"):
        BusinessHours(frozenset({0}), time(17), time(9))


T = utc(2026, 3, 24, 10)
PRODUCTION = SlaSpec(
    remind_after=15 * M,
    escalate=(EscalationStep(1 * H, "sre"), EscalationStep(4 * H, "cab")),
    expire_after=24 * H,
)
STAGING = SlaSpec(expire_after=2 * H, on_expire=ExpireAction.APPROVE)
REMIND, ESCALATE, EXPIRE = StepKind.REMIND, StepKind.ESCALATE, StepKind.EXPIRE

LADDER_CASES = [
    # (id, spec, reminders_sent, level, now, expected step)
    ("first reminder", PRODUCTION, 0, 0, T, Step(REMIND, T + 15 * M, reminder=1)),
    ("second reminder", PRODUCTION, 1, 0, T + 15 * M, Step(REMIND, T + 30 * M, reminder=2)),
    (
        "missed reminders collapse into one",
        PRODUCTION,
        0,
        0,
        T + 50 * M,
        Step(REMIND, T + 45 * M, reminder=3),
    ),
    (
        "reminders capped, then escalation",
        PRODUCTION,
        3,
        0,
        T + 50 * M,
        Step(ESCALATE, T + 1 * H, level=1, team="sre"),
    ),
    (
        "a due escalation goes before a due reminder",
        PRODUCTION,
        1,
        0,
        T + 1 * H,
        Step(ESCALATE, T + 1 * H, level=1, team="sre"),
    ),
    ("second level", PRODUCTION, 3, 1, T + 2 * H, Step(ESCALATE, T + 4 * H, level=2, team="cab")),
    ("then expiry", PRODUCTION, 3, 2, T + 5 * H, Step(EXPIRE, T + 24 * H)),
    ("expiry due", PRODUCTION, 3, 2, T + 25 * H, Step(EXPIRE, T + 24 * H)),
    (
        "after an outage expiry wins outright",
        PRODUCTION,
        0,
        0,
        T + 30 * H,
        Step(EXPIRE, T + 24 * H),
    ),
    ("auto-approval", STAGING, 0, 0, T, Step(StepKind.AUTO_APPROVE, T + 2 * H)),
    (
        "no reminder at or after expiry",
        SlaSpec(remind_after=15 * M, expire_after=30 * M),
        1,
        0,
        T + 16 * M,
        Step(EXPIRE, T + 30 * M),
    ),
    ("ladder done without expiry", SlaSpec(escalate=(EscalationStep(H, "sre"),)), 0, 1, T, None),
    ("no SLA", None, 0, 0, T, None),
]


@pytest.mark.parametrize(
    ("spec", "reminders", "level", "now", "expected"),
    [case[1:] for case in LADDER_CASES],
    ids=[case[0] for case in LADDER_CASES],
)
def test_ladder(
    spec: SlaSpec | None, reminders: int, level: int, now: datetime, expected: Step | None
) -> None:
    assert next_step(spec, T, reminders, level, now) == expected


def test_no_timers_before_the_clock_starts() -> None:
    assert next_step(PRODUCTION, None, 0, 0, T) is None


def _walk(spec: SlaSpec, started: datetime, until: datetime) -> list[tuple[StepKind, datetime]]:
    """Advance a clock to each next step and fire it, as the sweep would, until `until`."""
    fired: list[tuple[StepKind, datetime]] = []
    reminders = level = 0
    now = started
    while (step := next_step(spec, started, reminders, level, now)) is not None:
        if step.due_at > now:
            if step.due_at > until:
                break
            now = step.due_at
            continue
        fired.append((step.kind, step.due_at))
        if step.kind is REMIND:
            reminders = step.reminder
        elif step.kind is ESCALATE:
            level = step.level
        else:
            break
    return fired


def test_business_hours_ladder_across_the_spring_dst_change() -> None:
    spec = SlaSpec(
        remind_after=2 * H,
        escalate=(EscalationStep(4 * H, "sre"), EscalationStep(8 * H, "cab")),
        expire_after=16 * H,
        business_hours=WEEKDAYS_9_TO_5,
    )
    started = london(2026, 3, 27, 15)  # Friday 15:00 GMT; clocks go forward on Sunday
    assert _walk(spec, started, utc(2026, 4, 3)) == [
        (REMIND, utc(2026, 3, 27, 17)),  # Friday 17:00 GMT
        # Monday 11:00 BST (2 h on Friday + 2 h on Monday): the escalation goes first
        (ESCALATE, utc(2026, 3, 30, 10)),
        (REMIND, utc(2026, 3, 30, 10)),
        (REMIND, utc(2026, 3, 30, 12)),
        (ESCALATE, utc(2026, 3, 30, 14)),  # Monday 15:00 BST
        (EXPIRE, utc(2026, 3, 31, 14)),  # Tuesday 15:00 BST: 2 + 8 + 6 h
    ]


def test_business_hours_ladder_across_the_autumn_dst_change() -> None:
    spec = SlaSpec(escalate=(EscalationStep(4 * H, "sre"),), business_hours=WEEKDAYS_9_TO_5)
    started = london(2026, 10, 23, 15)  # Friday 15:00 BST; clocks go back on Sunday
    assert _walk(spec, started, utc(2026, 11, 1)) == [(ESCALATE, utc(2026, 10, 26, 11))]


def test_friday_evening_request_does_not_escalate_over_the_weekend() -> None:
    spec = SlaSpec(escalate=(EscalationStep(1 * H, "sre"),), business_hours=WEEKDAYS_9_TO_5)
    friday_evening = london(2026, 3, 20, 18)
    for now in (london(2026, 3, 21, 12), london(2026, 3, 22, 23), london(2026, 3, 23, 9, 59)):
        step = next_step(spec, friday_evening, 0, 0, now)
        assert step is not None
        assert step.due_at == london(2026, 3, 23, 10)
        assert step.due_at > now
    due = next_step(spec, friday_evening, 0, 0, london(2026, 3, 23, 10))
    assert due is not None
    assert (due.kind, due.due_at) == (ESCALATE, london(2026, 3, 23, 10))


TEXT_CASES = [
    ("escalation, relative", PRODUCTION, 3, 0, T + 18 * M, True, "escalates to sre in 42 min"),
    ("escalation, absolute", PRODUCTION, 3, 0, T + 18 * M, False, "escalates to sre at 11:00 UTC"),
    ("reminders are not announced", PRODUCTION, 0, 0, T, True, "escalates to sre in 1 h"),
    ("hours and minutes", PRODUCTION, 3, 1, T + 1 * H, True, "escalates to cab in 3 h"),
    ("expiry on another day", PRODUCTION, 3, 2, T + 5 * H, True, "expires at Wed 25 Mar 10:00 UTC"),
    (
        "auto-approval",
        STAGING,
        0,
        0,
        T + 30 * M,
        True,
        "auto-approves at 12:00 UTC unless someone rejects",
    ),
    (
        "escalation and auto-approval",
        SlaSpec(
            escalate=(EscalationStep(H, "sre"),), expire_after=2 * H, on_expire=ExpireAction.APPROVE
        ),
        0,
        0,
        T,
        True,
        "escalates to sre in 1 h · auto-approves at 12:00 UTC unless someone rejects",
    ),
    ("ladder done", SlaSpec(escalate=(EscalationStep(H, "sre"),)), 0, 1, T, True, None),
    ("no SLA", None, 0, 0, T, True, None),
]


@pytest.mark.parametrize(
    ("spec", "reminders", "level", "now", "relative", "expected"),
    [case[1:] for case in TEXT_CASES],
    ids=[case[0] for case in TEXT_CASES],
)
def test_next_timer_text(
    spec: SlaSpec | None,
    reminders: int,
    level: int,
    now: datetime,
    relative: bool,
    expected: str | None,
) -> None:
    assert next_timer_text(spec, T, reminders, level, now, relative=relative) == expected


def test_next_timer_text_uses_the_business_hours_zone() -> None:
    spec = SlaSpec(expire_after=H, business_hours=WEEKDAYS_9_TO_5)
    now = london(2026, 3, 30, 9)  # BST
    assert next_timer_text(spec, now, 0, 0, now) == "expires at 10:00 BST"
