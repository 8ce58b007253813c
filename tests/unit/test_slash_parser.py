"""The slash-command parser: forgiving input, typed commands, exact errors (table-driven)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.when import AtTime, ForDuration, describe, resolve
from handlers.slash_parser import (
    BreakGlassCommand,
    DelegateCommand,
    DelegationsCommand,
    FreezeCommand,
    FreezeListCommand,
    HelpCommand,
    ParseError,
    PendingCommand,
    ReviewCommand,
    UndelegateCommand,
    UnfreezeCommand,
    parse_approvals,
    parse_freeze,
    parse_unfreeze,
)

ENVS = ("production", "staging", "qa")
SERVICES = ("storefront", "vault", "payments-api")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list", FreezeListCommand()),
        (" LIST ", FreezeListCommand()),
        (
            "production for 2h quarter-end close",
            FreezeCommand(
                ("production",), (), ForDuration(timedelta(hours=2)), "quarter-end close"
            ),
        ),
        (
            "Production,staging for 90 minutes db upgrade",
            FreezeCommand(
                ("production", "staging"), (), ForDuration(timedelta(minutes=90)), "db upgrade"
            ),
        ),
        (
            "production staging until 2026-12-01 18:00 code freeze",
            FreezeCommand(
                ("production", "staging"),
                (),
                AtTime(at=time(18, 0), on=date(2026, 12, 1)),
                "code freeze",
            ),
        ),
        (
            "all until tomorrow 09:00 incident &amp; recovery",
            FreezeCommand((), (), AtTime(at=time(9, 0), days_ahead=1), "incident & recovery"),
        ),
        (
            "production until mon 09:00 services storefront, vault release train",
            FreezeCommand(
                ("production",),
                ("storefront", "vault"),
                AtTime(at=time(9, 0), weekday=0),
                "release train",
            ),
        ),
        (
            "production services vault,payments-api until Friday 6pm audit",
            FreezeCommand(
                ("production",),
                ("vault", "payments-api"),
                AtTime(at=time(18, 0), weekday=4),
                "audit",
            ),
        ),
        (
            "qa until 17:30 flaky infra",
            FreezeCommand(("qa",), (), AtTime(at=time(17, 30)), "flaky infra"),
        ),
        (
            "production nobody deploys today",
            FreezeCommand(("production",), (), None, "nobody deploys today"),
        ),
        (
            "production until 2026-12-01T18:00 x-mas",
            FreezeCommand(("production",), (), AtTime(at=time(18), on=date(2026, 12, 1)), "x-mas"),
        ),
    ],
)
def test_freeze_parses(text: str, expected: object) -> None:
    assert parse_freeze(text, environments=ENVS, services=SERVICES) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "production until tomorow 09:00 oops",
            "could not read 'tomorow' as a time; try 'for 2h' or 'until 2026-12-01 18:00'",
        ),
        (
            "production for 2x oops",
            "could not read '2x' as a duration; try 'for 2h' or 'until 2026-12-01 18:00'",
        ),
        (
            "production until 25:00 oops",
            "could not read '25:00' as a time; try 'for 2h' or 'until 2026-12-01 18:00'",
        ),
        (
            "production until 2026-13-01 18:00 oops",
            "could not read '2026-13-01' as a date; try 'for 2h' or 'until 2026-12-01 18:00'",
        ),
        (
            "production until",
            "'until' needs a time after it; try 'for 2h' or 'until 2026-12-01 18:00'",
        ),
        ("prod for 2h x", "unknown environment 'prod' (known: production, qa, staging)"),
        (
            "production services shop reason",
            "unknown service 'shop' (known: payments-api, storefront, vault)",
        ),
        ("production for 2h", "A freeze needs a reason"),
        ("", "Tell me what to freeze."),
    ],
)
def test_freeze_errors_are_exact(text: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_freeze(text, environments=ENVS, services=SERVICES)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", HelpCommand()),
        ("help", HelpCommand()),
        ("frobnicate now", HelpCommand(unknown="frobnicate")),
        ("pending", PendingCommand()),
        ("Delegations", DelegationsCommand()),
        ("undelegate", UndelegateCommand(None)),
        ("undelegate <@U0BOB|bob>", UndelegateCommand("U0BOB")),
        (
            "delegate <@U0BOB|bob> until mon 09:00",
            DelegateCommand("U0BOB", AtTime(at=time(9), weekday=0), ()),
        ),
        (
            "delegate <@U0BOB> for 3d environments production, staging",
            DelegateCommand("U0BOB", ForDuration(timedelta(days=3)), ("production", "staging")),
        ),
        (
            "delegate @U0BOB until 2026-12-01 18:00 production qa",
            DelegateCommand(
                "U0BOB", AtTime(at=time(18), on=date(2026, 12, 1)), ("production", "qa")
            ),
        ),
        (
            "breakglass req_01abc payments are down &lt;now&gt;",
            BreakGlassCommand("req_01abc", "payments are down <now>"),
        ),
        ("break-glass `req_1` hotfix", BreakGlassCommand("req_1", "hotfix")),
        (
            "review req_1 root cause: config drift",
            ReviewCommand("req_1", "root cause: config drift"),
        ),
    ],
)
def test_approvals_parses(text: str, expected: object) -> None:
    assert parse_approvals(text, environments=ENVS) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("delegate bob until mon 09:00", "could not read 'bob' as a person"),
        ("delegate <@U0BOB>", "Say until when the delegation lasts"),
        ("delegate <@U0BOB> until someday", "could not read 'someday' as a time"),
        ("delegate <@U0BOB> until mon 09:00 environments prod", "unknown environment 'prod'"),
        ("breakglass", "Usage: /approvals breakglass <request-id> <reason>"),
        ("breakglass req_1", "/approvals breakglass needs a reason after the request id"),
        ("review req_1", "/approvals review needs a summary after the request id"),
    ],
)
def test_approvals_errors_are_exact(text: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_approvals(text, environments=ENVS)
    assert caught.value.message.startswith(message)


def test_unfreeze() -> None:
    assert parse_unfreeze(" frz_01abc ") == UnfreezeCommand("frz_01abc")
    with pytest.raises(ParseError, match="Tell me one freeze"):
        parse_unfreeze("")
    with pytest.raises(ParseError, match="one freeze at a time"):
        parse_unfreeze("production staging")


LONDON = ZoneInfo("Europe/London")
# Wednesday 2026-03-25 10:00 UTC (GMT; British Summer Time starts Sunday 2026-03-29).
WED = datetime(2026, 3, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "zone", "expected"),
    [
        (ForDuration(timedelta(hours=2)), LONDON, datetime(2026, 3, 25, 12, 0, tzinfo=UTC)),
        (AtTime(at=time(9), days_ahead=1), LONDON, datetime(2026, 3, 26, 9, 0, tzinfo=UTC)),
        # Monday after the clocks go forward: 09:00 BST is 08:00 UTC.
        (AtTime(at=time(9), weekday=0), LONDON, datetime(2026, 3, 30, 8, 0, tzinfo=UTC)),
        # A time already passed today means tomorrow; a weekday today already passed: next week.
        (AtTime(at=time(9)), LONDON, datetime(2026, 3, 26, 9, 0, tzinfo=UTC)),
        (AtTime(at=time(9), weekday=2), LONDON, datetime(2026, 4, 1, 8, 0, tzinfo=UTC)),
        (AtTime(at=time(11), weekday=2), LONDON, datetime(2026, 3, 25, 11, 0, tzinfo=UTC)),
        # In the user's zone, not UTC: 18:00 in New York (EDT since 8 March) is 22:00 UTC.
        (
            AtTime(at=time(18), on=date(2026, 3, 25)),
            ZoneInfo("America/New_York"),
            datetime(2026, 3, 25, 22, 0, tzinfo=UTC),
        ),
        # 01:30 on 29 March does not exist in London: it lands after the gap (02:30 BST).
        (
            AtTime(at=time(1, 30), on=date(2026, 3, 29)),
            LONDON,
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        ),
    ],
)
def test_times_resolve_in_the_users_zone(spec: object, zone: ZoneInfo, expected: datetime) -> None:
    assert resolve(spec, WED, zone) == expected  # type: ignore[arg-type]


def test_describe_shows_the_weekday_nearby_and_the_date_further_away() -> None:
    assert describe(datetime(2026, 3, 30, 8, 0, tzinfo=UTC), LONDON, WED) == "Mon 09:00 BST"
    assert (
        describe(datetime(2026, 4, 30, 8, 0, tzinfo=UTC), LONDON, WED) == "Thu 2026-04-30 09:00 BST"
    )
