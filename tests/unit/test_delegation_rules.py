"""The policy's `delegation:` section: its validation, the refusals of `/approvals delegate`
(bot/domain/delegation_rules.py, table-driven), and the filter the vote path applies to stored
delegations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain.delegation_rules import (
    DelegationRules,
    DelegationTerms,
    TeamMembers,
    delegation_refusal,
    honoured_delegations,
    honoured_until,
    human_duration,
    not_honoured,
)
from bot.domain.model import Delegation
from bot.policy import Policy, PolicyError, load_policy, policy_json_schema
from bot.services.delegations import delegation_terms

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quorum.yml"

# Alice and Bob: payments. Alice and Carol: sre. Dan: on-call only. Mallory: nobody.
ALICE, BOB, CAROL, DAN, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0DAN", "U0MAL"
TEAMS = TeamMembers(
    known={
        "payments": frozenset({ALICE, BOB}),
        "sre": frozenset({ALICE, CAROL}),
        "on-call": frozenset({DAN, CAROL}),
    }
)
DEFAULT = DelegationRules()
TO_ON_CALL = DelegationRules(to="on-call")
NOT_PROD = DelegationRules(not_honoured_in=("production",))


# --- /approvals delegate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delegator", "delegate", "period", "environments", "rules", "expected"),
    [
        pytest.param(ALICE, BOB, timedelta(days=3), (), DEFAULT, None, id="shares-a-team"),
        pytest.param(ALICE, CAROL, timedelta(days=3), (), DEFAULT, None, id="shares-another"),
        pytest.param(ALICE, DAN, timedelta(days=14), (), TO_ON_CALL, None, id="to-team-member"),
        pytest.param(ALICE, BOB, timedelta(days=14), (), DEFAULT, None, id="exactly-the-max"),
        pytest.param(
            ALICE,
            ALICE,
            timedelta(days=1),
            (),
            DEFAULT,
            "You cannot delegate to yourself.",
            id="self",
        ),
        pytest.param(
            ALICE,
            BOB,
            timedelta(days=14, seconds=1),
            (),
            DEFAULT,
            "A delegation may last at most 14 days; ask for 'for 14d' or an earlier 'until' "
            "(the policy's delegation.max_period).",
            id="a-second-too-long",
        ),
        pytest.param(
            ALICE,
            BOB,
            timedelta(weeks=520),
            (),
            DelegationRules(max_period=timedelta(hours=36)),
            "A delegation may last at most 1 day 12 hours; ask for 'for 36h' or an earlier "
            "'until' (the policy's delegation.max_period).",
            id="520w-against-36h",
        ),
        pytest.param(
            ALICE,
            DAN,
            timedelta(days=1),
            (),
            DEFAULT,
            f"<@{DAN}> is not in any team you approve for (payments, sre); a delegate must "
            "share one of your teams.",
            id="shares-no-team",
        ),
        pytest.param(
            ALICE,
            BOB,
            timedelta(days=1),
            (),
            TO_ON_CALL,
            f"<@{BOB}> is not in the team 'on-call', and the policy lets delegations go only "
            "to its members (delegation.to).",
            id="outside-to-team",
        ),
        pytest.param(
            MALLORY,
            BOB,
            timedelta(days=1),
            (),
            DEFAULT,
            "You are not in any team, so you have no approvals to delegate.",
            id="delegator-in-no-team",
        ),
        pytest.param(
            MALLORY, DAN, timedelta(days=1), (), TO_ON_CALL, None, id="to-team-any-delegator"
        ),
        pytest.param(
            ALICE,
            BOB,
            timedelta(days=1),
            ("production",),
            NOT_PROD,
            "Delegations are never honoured in production (the policy's "
            "delegation.not_honoured_in), so this one would never count.",
            id="only-not-honoured",
        ),
        pytest.param(
            ALICE,
            BOB,
            timedelta(days=1),
            ("production", "staging"),
            NOT_PROD,
            None,
            id="some-honoured",
        ),
        pytest.param(ALICE, BOB, timedelta(days=1), (), NOT_PROD, None, id="every-environment"),
    ],
)
def test_delegation_refusal(
    delegator: str,
    delegate: str,
    period: timedelta,
    environments: tuple[str, ...],
    rules: DelegationRules,
    expected: str | None,
) -> None:
    assert (
        delegation_refusal(
            delegator=delegator,
            delegate=delegate,
            period=period,
            environments=environments,
            rules=rules,
            teams=TEAMS,
        )
        == expected
    )


def test_the_period_is_checked_before_the_teams() -> None:
    refusal = delegation_refusal(
        delegator=ALICE,
        delegate=MALLORY,
        period=timedelta(weeks=3),
        environments=(),
        rules=DEFAULT,
        teams=TEAMS,
    )
    assert refusal is not None
    assert refusal.startswith("A delegation may last at most 14 days; ")


@pytest.mark.parametrize(
    ("environments", "rules", "expected"),
    [
        ((), DEFAULT, ()),
        ((), NOT_PROD, ("production",)),
        (("staging",), NOT_PROD, ()),
        (("staging", "production"), NOT_PROD, ("production",)),
    ],
)
def test_where_a_new_delegation_will_not_be_honoured(
    environments: tuple[str, ...], rules: DelegationRules, expected: tuple[str, ...]
) -> None:
    assert not_honoured(environments, rules) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=14), "14 days"),
        (timedelta(days=1), "1 day"),
        (timedelta(hours=36), "1 day 12 hours"),
        (timedelta(minutes=90), "1 hour 30 minutes"),
        (timedelta(seconds=1), "1 second"),
    ],
)
def test_human_duration(value: timedelta, text: str) -> None:
    assert human_duration(value) == text


# --- the vote path ------------------------------------------------------------------------------


def delegation(
    delegator: str = ALICE,
    delegate: str = BOB,
    *,
    created: timedelta = timedelta(days=1),  # how long ago
    lasts: timedelta = timedelta(days=3),
    environments: tuple[str, ...] = (),
) -> Delegation:
    made = NOW - created
    return Delegation(
        id=f"dlg_{delegator}_{delegate}",
        delegator=delegator,
        delegate=delegate,
        environments=environments,
        starts_at=made,
        ends_at=made + lasts,
        created_at=made,
    )


@pytest.mark.parametrize(
    ("stored", "rules", "teams", "environment", "honoured"),
    [
        pytest.param(delegation(), DEFAULT, TEAMS, "production", True, id="within-the-rules"),
        pytest.param(
            delegation(), NOT_PROD, TEAMS, "production", False, id="not-honoured-environment"
        ),
        pytest.param(delegation(), NOT_PROD, TEAMS, "staging", True, id="other-environment"),
        pytest.param(
            delegation(created=timedelta(days=20), lasts=timedelta(weeks=520)),
            DEFAULT,
            TEAMS,
            "production",
            False,
            id="stored-longer-past-max-period",
        ),
        pytest.param(
            delegation(created=timedelta(days=2), lasts=timedelta(weeks=520)),
            DelegationRules(max_period=timedelta(days=2)),
            TEAMS,
            "production",
            False,
            id="exactly-at-max-period",
        ),
        pytest.param(
            delegation(created=timedelta(days=2), lasts=timedelta(weeks=520)),
            DEFAULT,
            TEAMS,
            "production",
            True,
            id="stored-longer-within-max-period",
        ),
        pytest.param(
            delegation(ALICE, DAN), DEFAULT, TEAMS, "production", False, id="no-shared-team"
        ),
        pytest.param(
            delegation(ALICE, BOB), TO_ON_CALL, TEAMS, "production", False, id="left-to-team"
        ),
        pytest.param(
            delegation(ALICE, DAN), TO_ON_CALL, TEAMS, "production", True, id="in-to-team"
        ),
        pytest.param(
            delegation(ALICE, MALLORY),
            TO_ON_CALL,
            TeamMembers(known={"on-call": frozenset({DAN})}, partial=frozenset({"on-call"})),
            "production",
            True,
            id="user-group-team-not-asked",
        ),
        pytest.param(
            delegation(ALICE, MALLORY),
            DEFAULT,
            TeamMembers(known={"payments": frozenset({ALICE})}),
            "production",
            False,
            id="removed-from-the-team",
        ),
    ],
)
def test_honoured_delegations(
    stored: Delegation,
    rules: DelegationRules,
    teams: TeamMembers,
    environment: str,
    honoured: bool,
) -> None:
    found = honoured_delegations(
        [stored], rules, teams, delegate=stored.delegate, environment=environment, now=NOW
    )
    assert found == ((stored,) if honoured else ())


def test_only_delegations_to_the_clicker_are_kept() -> None:
    mine, theirs = delegation(ALICE, BOB), delegation(ALICE, CAROL)
    found = honoured_delegations(
        [mine, theirs], DEFAULT, TEAMS, delegate=BOB, environment="production", now=NOW
    )
    assert found == (mine,)


def test_honoured_until_is_the_earlier_of_its_end_and_the_max_period() -> None:
    long = delegation(created=timedelta(0), lasts=timedelta(weeks=520))
    assert honoured_until(long, DEFAULT) == NOW + timedelta(days=14)
    short = delegation(created=timedelta(0), lasts=timedelta(days=1))
    assert honoured_until(short, DEFAULT) == NOW + timedelta(days=1)


def test_the_vote_path_fills_in_the_members_it_resolved() -> None:
    # sre has a user group: partial until the vote resolves its members.
    terms = DelegationTerms(
        DEFAULT,
        TeamMembers(known={"sre": frozenset()}, partial=frozenset({"sre"})),
    )
    stored = delegation(ALICE, CAROL)
    args: dict[str, Any] = {"delegate": CAROL, "environment": "production", "now": NOW}
    assert terms.honoured([stored], resolved={}, **args) == (stored,)
    assert terms.honoured([stored], resolved={"sre": frozenset({ALICE, CAROL})}, **args) == (
        stored,
    )
    assert terms.honoured([stored], resolved={"sre": frozenset({ALICE})}, **args) == ()
    assert terms.honoured([stored], resolved={}, delegate=BOB, environment="x", now=NOW) == ()


# --- the policy section -------------------------------------------------------------------------


def policy(**delegation: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "defaults": {"channel": "C0DEPLOYS"},
        "teams": {
            "web": {"members": ["U0WEB1", "U0WEB2"]},
            "sre": {"usergroup": "S0SRE"},
        },
        "environments": {
            "production": {"rules": [{"name": "owner-review", "from": "web", "approvals": 1}]},
            "staging": {"rules": [{"name": "owner-review", "from": "web", "approvals": 1}]},
        },
    }
    if delegation:
        data["delegation"] = delegation
    return data


def test_the_section_is_optional_with_defaults() -> None:
    rules = Policy.from_mapping(policy()).delegation.rules
    assert rules == DelegationRules(max_period=timedelta(days=14), to=None, not_honoured_in=())


def test_the_section_is_read() -> None:
    loaded = Policy.from_mapping(
        policy(to="sre", max_period="3d", not_honoured_in=["production"])
    ).delegation
    assert loaded.rules == DelegationRules(
        max_period=timedelta(days=3), to="sre", not_honoured_in=("production",)
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"to": "nobody"},
            ["quorum.yml: delegation.to: unknown team 'nobody' (known: sre, web)"],
        ),
        (
            {"not_honoured_in": ["staging", "x"]},
            [
                "quorum.yml: delegation.not_honoured_in[1]: unknown environment 'x' "
                "(known: production, staging)"
            ],
        ),
        (
            {"max_period": "2 weeks"},
            [
                "quorum.yml: delegation.max_period: invalid duration '2 weeks': expected a "
                "duration such as 30s, 15m, 4h, 2d, 1w or 1h30m (units largest first)"
            ],
        ),
        (
            {"for": "1d"},
            [
                "quorum.yml: delegation.for: unknown key 'for' (allowed: to, max_period, "
                "not_honoured_in)"
            ],
        ),
    ],
)
def test_section_errors_name_the_key_path(section: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(policy(**section), "quorum.yml")
    assert info.value.errors == expected


def test_the_example_uses_the_section() -> None:
    rules = load_policy(EXAMPLE).delegation.rules
    assert rules.not_honoured_in == ("production",)
    assert rules.max_period == timedelta(days=14)


def test_the_schema_shows_the_default_as_written() -> None:
    schema = policy_json_schema()["$defs"]["DelegationPolicy"]
    assert schema["properties"]["max_period"]["default"] == "14d"


def test_the_vote_path_terms_come_from_the_policy_once() -> None:
    loaded = Policy.from_mapping(policy(to="sre"))
    terms = delegation_terms(loaded)
    assert terms is delegation_terms(loaded)
    assert terms.rules.to == "sre"
    assert terms.teams.known["web"] == frozenset({"U0WEB1", "U0WEB2"})
    assert terms.teams.partial == frozenset({"sre"})  # a user group: not asked on the vote path
