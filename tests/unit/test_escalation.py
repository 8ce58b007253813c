"""An SLA escalation widens only the rules it names: by default the `from: owner` rules, never a
risk tier's, break-glass's or an unmapped requester's sign-off unless `for_rules` names it.

Table-driven: which rules a step widens, which rules an escalated member may then fill, how the
tally counts them (the attack: two sre approvals must not decide a request security has not
signed off), the policy's `for_rules` validation with key paths, and what the card, the timer
note and `quorum explain` say.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.model import (
    ApprovalRequest,
    RejectMode,
    RequestDetails,
    Requester,
    RequestState,
    Risk,
    Rule,
    Vote,
    VoteKind,
)
from bot.domain.quorum import eligible_rules, is_eligible, tally, would_help
from bot.domain.requesters import unmapped_rule
from bot.domain.sla import (
    EscalationStep,
    SlaSpec,
    next_timer_text,
    widen,
    widen_reached,
    widened_names,
)
from bot.policy import Policy, PolicyError
from bot.routing import break_glass_rules, explain, route
from bot.services.timers import with_reached_escalations
from handlers.blocks import escalation_text, render_card
from storage.repositories.requests import _rules_from_json, _rules_to_json

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
H = timedelta(hours=1)

OWNER = Rule("owner-review", "payments", 1)  # from: owner, resolved
SRE_SIGNOFF = Rule("sre-signoff", "sre", 1)  # the environment's own rule from a named team
SECURITY = Rule("security-review", "security", 1, origin="risk:high")
GLASS = Rule("second-rm", "release-managers", 1, origin="break-glass", excluded=("rm1",))
VOUCH = unmapped_rule("payments")  # requester-unknown, origin unmapped-requester
# A rule named like an owner rule but added by a risk tier: the default never widens it.
LOOKALIKE = Rule("owner-review", "payments", 1, origin="risk:high")
RULES = (OWNER, SRE_SIGNOFF, SECURITY, GLASS, VOUCH)

TEAMS: Mapping[str, frozenset[str]] = {
    "payments": frozenset({"pay1", "pay2"}),
    "sre": frozenset({"sre1", "sre2"}),
    "security": frozenset({"sec1"}),
    "release-managers": frozenset({"rm1", "rm2"}),
    "cab": frozenset({"cab1", "rm1"}),
}


def step(team: str, for_rules: tuple[str, ...] | None = None) -> EscalationStep:
    """A ladder step of an environment whose only `from: owner` rule is owner-review."""
    return EscalationStep(H, team, for_rules=for_rules, owner_rules=("owner-review",))


# --- which rules a step widens ------------------------------------------------------------------

WIDENS = [
    ("default: the from-owner rules only", RULES, step("sre"), {"owner-review": ("sre",)}),
    (
        "default: a named team's own environment rule is not an owner rule",
        (SRE_SIGNOFF,),
        step("cab"),
        {},
    ),
    ("default: never a risk tier's rule of the same name", (LOOKALIKE,), step("sre"), {}),
    (
        "explicit: a risk tier's rule when named",
        RULES,
        step("sre", ("security-review",)),
        {
            "security-review": ("sre",),
        },
    ),
    (
        "explicit: a break-glass rule when named",
        RULES,
        step("cab", ("second-rm",)),
        {
            "second-rm": ("cab",),
        },
    ),
    (
        "explicit: an unmapped requester's rule when named",
        RULES,
        step("sre", ("requester-unknown",)),
        {
            "requester-unknown": ("sre",),
        },
    ),
    (
        "explicit: only the names listed, not the owner default as well",
        RULES,
        step("cab", ("sre-signoff",)),
        {"sre-signoff": ("cab",)},
    ),
    ("explicit empty list: notify only", RULES, step("sre", ()), {}),
    ("a rule of the step's own team gains nothing", RULES, step("payments"), {}),
    ("an owner rule the request lacks", (SECURITY,), step("sre"), {}),
]


@pytest.mark.parametrize(
    ("rules", "rung", "expected"), [case[1:] for case in WIDENS], ids=[c[0] for c in WIDENS]
)
def test_which_rules_a_step_widens(
    rules: tuple[Rule, ...], rung: EscalationStep, expected: dict[str, tuple[str, ...]]
) -> None:
    widened = widen(rules, rung)
    assert {r.name: r.widened_by for r in widened if r.widened_by} == expected
    assert widened_names(rules, rung) == tuple(expected)
    # nothing else about a rule changes
    assert [(r.name, r.team, r.approvals, r.origin, r.excluded) for r in widened] == [
        (r.name, r.team, r.approvals, r.origin, r.excluded) for r in rules
    ]


def test_steps_add_up_and_a_step_is_recorded_once() -> None:
    ladder = (step("sre"), step("cab", ("owner-review", "security-review")))
    assert widen_reached(RULES, ladder, 0) == RULES
    once = widen_reached(RULES, ladder, 2)
    assert {r.name: r.widened_by for r in once if r.widened_by} == {
        "owner-review": ("sre", "cab"),
        "security-review": ("cab",),
    }
    assert widen(once, ladder[0]) == once  # replaying a step adds nothing


# --- who may fill what once widened -------------------------------------------------------------

ESCALATED = widen(widen(RULES, step("sre")), step("cab", ("second-rm",)))

MAY_FILL = [
    ("an escalated sre member fills owner-review", "sre1", ("owner-review", "sre-signoff")),
    ("but never security-review, which no step names", "sre2", ("owner-review", "sre-signoff")),
    ("the owner team keeps its own rules", "pay1", ("owner-review", "requester-unknown")),
    ("security still fills security-review", "sec1", ("security-review",)),
    ("a named break-glass rule admits the escalated team", "cab1", ("second-rm",)),
    ("exclusions bind widened members too", "rm1", ()),
    ("the rule's own team is unaffected", "rm2", ("second-rm",)),
    ("nobody else", "mallory", ()),
]


@pytest.mark.parametrize(
    ("user", "expected"), [case[1:] for case in MAY_FILL], ids=[c[0] for c in MAY_FILL]
)
def test_which_rules_an_escalated_member_may_fill(user: str, expected: tuple[str, ...]) -> None:
    assert tuple(r.name for r in eligible_rules(ESCALATED, TEAMS, user)) == expected
    assert tuple(r.name for r in ESCALATED if r.admits(user, TEAMS)) == expected
    assert is_eligible(ESCALATED, TEAMS, user) is bool(expected)


def votes(*voters: str, kind: VoteKind = VoteKind.APPROVE) -> list[Vote]:
    return [
        Vote(
            "r1", voter, kind, T0 + timedelta(minutes=i), reason="no" if kind == "reject" else None
        )
        for i, voter in enumerate(voters)
    ]


ATTACK_RULES = widen((OWNER, SECURITY), step("sre"))

TALLIES = [
    ("two sre approvals do not decide it", ("sre1", "sre2"), None, {"owner-review": ("sre1",)}),
    (
        "security's approval then decides it",
        ("sre1", "sre2", "sec1"),
        RequestState.APPROVED,
        {"owner-review": ("sre1",), "security-review": ("sec1",)},
    ),
    (
        "the owner team still counts",
        ("pay1", "sec1"),
        RequestState.APPROVED,
        {"owner-review": ("pay1",), "security-review": ("sec1",)},
    ),
]


@pytest.mark.parametrize(
    ("voters", "outcome", "filled"), [case[1:] for case in TALLIES], ids=[c[0] for c in TALLIES]
)
def test_the_tally_counts_escalated_members_only_where_widened(
    voters: tuple[str, ...], outcome: RequestState | None, filled: dict[str, tuple[str, ...]]
) -> None:
    current = tally(ATTACK_RULES, TEAMS, votes(*voters), RejectMode.ANY)
    assert current.outcome is outcome
    assert {p.rule.name: p.approvers for p in current.rules if p.approvers} == filled


def test_a_second_escalated_approval_is_not_needed() -> None:
    assert would_help(ATTACK_RULES, TEAMS, votes(), "sre1")
    assert not would_help(ATTACK_RULES, TEAMS, votes("sre1"), "sre2")
    assert would_help(ATTACK_RULES, TEAMS, votes("sre1"), "sec1")


@pytest.mark.parametrize(
    ("rejecters", "outcome"),
    [(("sre1",), RequestState.REJECTED), (("cab1",), None)],
    ids=["a widened member's rejection counts", "a notified-only team's does not"],
)
def test_rejections_follow_the_widening(
    rejecters: tuple[str, ...], outcome: RequestState | None
) -> None:
    rules = widen(widen((OWNER, SECURITY), step("sre")), step("cab", ()))
    current = tally(rules, TEAMS, votes(*rejecters, kind=VoteKind.REJECT), RejectMode.QUORUM)
    assert current.outcome is outcome


# --- stored with the request ----------------------------------------------------------------------


def test_widened_by_is_stored_with_the_rules_and_absent_means_none() -> None:
    stored = _rules_to_json(ESCALATED)
    assert stored[0]["widened_by"] == ["sre"]
    assert "widened_by" not in stored[2]  # unwidened rules keep their old JSON shape
    assert _rules_from_json(stored) == ESCALATED
    old = [{"name": "owner-review", "team": "payments", "approvals": 1}]
    assert _rules_from_json(old) == (OWNER,)


# --- the policy: for_rules and its validation ---------------------------------------------------


def policy_data() -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"channel": "C0DEPLOYS"},
        "teams": {
            "payments": {"channel": "C0PAY", "members": ["U0PAY1", "U0PAY2"]},
            "sre": {"usergroup": "S0SRE"},
            "security": {"members": ["U0SEC1"]},
            "release-managers": {"members": ["U0RM1", "U0RM2"]},
        },
        "services": {"payments-api": {"owner": "payments", "risk": "high"}},
        "environments": {
            "production": {
                "rules": [
                    {"name": "owner-review", "from": "owner", "approvals": 1},
                    {"name": "sre-signoff", "from": "sre", "approvals": 1},
                ],
                "sla": {"escalate": [{"after": "1h", "to": "sre"}]},
            },
            "staging": {"rules": [{"name": "smoke", "from": "owner", "approvals": 1}]},
        },
        "risk": {
            "high": {
                "extra_rules": [{"name": "security-review", "from": "security", "approvals": 1}]
            }
        },
        "release_managers": "release-managers",
        "break_glass": {
            "allowed": "release-managers",
            "extra_rules": [{"name": "second-rm", "from": "release-managers", "approvals": 1}],
        },
    }


def with_steps(*steps: dict[str, Any]) -> dict[str, Any]:
    data = policy_data()
    data["environments"]["production"]["sla"]["escalate"] = list(steps)
    return data


KNOWN = "known: owner-review, second-rm, security-review, sre-signoff"
PREFIX = "quorum.yml: environments.production.sla.escalate"

FOR_RULES_ERRORS = [
    (
        "an unknown name",
        [{"after": "1h", "to": "sre", "for_rules": ["owner-reveiw"]}],
        [f"{PREFIX}[0].for_rules[0]: unknown rule 'owner-reveiw' ({KNOWN})"],
    ),
    (
        "another environment's rule, at its index",
        [
            {"after": "1h", "to": "sre"},
            {"after": "2h", "to": "security", "for_rules": ["owner-review", "smoke"]},
        ],
        [f"{PREFIX}[1].for_rules[1]: unknown rule 'smoke' ({KNOWN})"],
    ),
    (
        "every bad name is reported",
        [{"after": "1h", "to": "sre", "for_rules": ["a", "sre-signoff", "b"]}],
        [
            f"{PREFIX}[0].for_rules[0]: unknown rule 'a' ({KNOWN})",
            f"{PREFIX}[0].for_rules[2]: unknown rule 'b' ({KNOWN})",
        ],
    ),
]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [case[1:] for case in FOR_RULES_ERRORS],
    ids=[c[0] for c in FOR_RULES_ERRORS],
)
def test_for_rules_must_name_rules_a_request_can_have(
    steps: list[dict[str, Any]], expected: list[str]
) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(with_steps(*steps), "quorum.yml")
    assert info.value.errors == expected


def test_for_rules_may_name_the_unmapped_requester_rule_where_it_can_exist() -> None:
    data = with_steps({"after": "1h", "to": "sre", "for_rules": ["requester-unknown"]})
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(data, "quorum.yml")
    assert info.value.errors == [
        f"{PREFIX}[0].for_rules[0]: unknown rule 'requester-unknown' ({KNOWN})"
    ]
    production = data["environments"]["production"]
    production["unmapped_requester"] = {"require_approval_from": "security"}
    policy = Policy.from_mapping(data, "quorum.yml")
    env = policy.environments["production"]
    assert env.sla is not None
    rung = env.sla.escalate[0].ladder_step(env)
    assert widened_names((OWNER, VOUCH), rung) == ("requester-unknown",)


def test_for_rules_must_be_a_list_of_names() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(with_steps({"after": "1h", "to": "sre", "for_rules": "x"}), "q.yml")
    (error,) = info.value.errors
    assert error.startswith("q.yml: environments.production.sla.escalate[0].for_rules")


VALID_FOR_RULES = [
    ("absent: the from-owner rules", None, ("owner-review",)),
    ("empty: notify only", [], ()),
    ("a risk tier's and break-glass's rules", ["security-review", "second-rm"], None),
]


@pytest.mark.parametrize(
    ("for_rules", "owner_default"),
    [case[1:] for case in VALID_FOR_RULES],
    ids=[c[0] for c in VALID_FOR_RULES],
)
def test_valid_for_rules_load_into_the_ladder(
    for_rules: list[str] | None, owner_default: tuple[str, ...] | None
) -> None:
    entry: dict[str, Any] = {"after": "1h", "to": "sre"}
    if for_rules is not None:
        entry["for_rules"] = for_rules
    policy = Policy.from_mapping(with_steps(entry))
    env = policy.environments["production"]
    assert env.sla is not None
    rung = env.sla.escalate[0].ladder_step(env)
    assert rung.for_rules == (tuple(for_rules) if for_rules is not None else None)
    assert rung.owner_rules == ("owner-review",)
    assert (rung.team, rung.after) == ("sre", H)


# --- what people are told -----------------------------------------------------------------------

EXPLAINED = [
    (
        "the default",
        [{"after": "1h", "to": "sre"}],
        ["  after 1h: sre is notified and may also approve owner-review"],
    ),
    (
        "named rules, and a notify-only step",
        [
            {"after": "1h", "to": "security", "for_rules": []},
            {"after": "2h", "to": "release-managers", "for_rules": ["owner-review", "sre-signoff"]},
        ],
        [
            "  after 1h: security is notified only (it may approve no rule it could not already)",
            "  after 2h: release-managers is notified and may also approve owner-review, "
            "sre-signoff",
        ],
    ),
    (
        "a specialist sign-off only when named",
        [{"after": "1h", "to": "sre", "for_rules": ["security-review"]}],
        ["  after 1h: sre is notified and may also approve security-review"],
    ),
    (
        "a break-glass rule applies once glass is broken",
        [{"after": "1h", "to": "sre", "for_rules": ["owner-review", "second-rm"]}],
        [
            "  after 1h: sre is notified and may also approve owner-review (after break glass also "
            "second-rm)"
        ],
    ),
]


@pytest.mark.parametrize(
    ("steps", "expected"), [case[1:] for case in EXPLAINED], ids=[c[0] for c in EXPLAINED]
)
def test_explain_says_who_may_approve_what_after_each_step(
    steps: list[dict[str, Any]], expected: list[str]
) -> None:
    policy = Policy.from_mapping(with_steps(*steps))
    routed = route(
        policy, service="payments-api", repository=None, environment="production", risk=None
    )
    lines = explain(policy, routed).splitlines()
    start = lines.index("Escalation (who may approve what after each step):")
    assert lines[start + 1 :] == expected


def test_explain_without_a_ladder_has_no_escalation_section() -> None:
    data = copy.deepcopy(policy_data())
    del data["environments"]["production"]["sla"]
    policy = Policy.from_mapping(data)
    routed = route(
        policy, service="payments-api", repository=None, environment="production", risk=None
    )
    assert "Escalation" not in explain(policy, routed)


TIMER_NOTES = [
    ("no rules given: as before", None, "escalates to sre in 1 h"),
    (
        "widens owner-review",
        (OWNER, SECURITY),
        "escalates to sre in 1 h, who may then also approve owner-review",
    ),
    ("widens nothing here", (SECURITY,), "escalates to sre in 1 h (notified only)"),
]


@pytest.mark.parametrize(
    ("rules", "expected"), [case[1:] for case in TIMER_NOTES], ids=[c[0] for c in TIMER_NOTES]
)
def test_the_timer_note_says_what_the_next_step_widens(
    rules: tuple[Rule, ...] | None, expected: str
) -> None:
    spec = SlaSpec(escalate=(step("sre"),))
    assert next_timer_text(spec, T0, 0, 0, T0, rules=rules) == expected


def make_request(rules: tuple[Rule, ...], level: int) -> ApprovalRequest:
    return ApprovalRequest(
        id="req_1",
        source="generic",
        service="payments-api",
        environment="production",
        risk=Risk.HIGH,
        owner_team="payments",
        channel="C0PAY",
        rules=rules,
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(slack_user="UREQ"),
        details=RequestDetails(),
        created_at=T0,
        escalation_level=level,
    )


CARD_LINES = [
    ("one team", ATTACK_RULES, 1, "Escalated (level 1): sre may also approve owner-review"),
    (
        "teams add up",
        widen(ATTACK_RULES, step("cab", ("owner-review", "security-review"))),
        2,
        "Escalated (level 2): sre may also approve owner-review; cab may also approve "
        "owner-review, security-review",
    ),
    (
        "a notify-only step",
        (OWNER, SECURITY),
        1,
        "Escalated (level 1): teams notified only (no rule widened)",
    ),
]


@pytest.mark.parametrize(
    ("rules", "level", "expected"),
    [case[1:] for case in CARD_LINES],
    ids=[c[0] for c in CARD_LINES],
)
def test_the_card_says_who_may_approve_what(
    rules: tuple[Rule, ...], level: int, expected: str
) -> None:
    request = make_request(rules, level)
    assert expected.endswith(escalation_text(request))
    card = render_card(request, tally(rules, TEAMS, [], RejectMode.ANY), [], now=T0)
    assert any(expected in str(block) for block in card.blocks)


BREAK_GLASS_AFTER_ESCALATION = [
    ("the default never widens break-glass's rule", None, 1, ()),
    ("a fired step that names it widens it", ["owner-review", "second-rm"], 1, ("sre",)),
    ("a step not yet fired does not", ["owner-review", "second-rm"], 0, ()),
]


@pytest.mark.parametrize(
    ("for_rules", "level", "expected"),
    [case[1:] for case in BREAK_GLASS_AFTER_ESCALATION],
    ids=[c[0] for c in BREAK_GLASS_AFTER_ESCALATION],
)
def test_rules_added_after_an_escalation_get_the_widening_of_fired_steps(
    for_rules: list[str] | None, level: int, expected: tuple[str, ...]
) -> None:
    entry: dict[str, Any] = {"after": "1h", "to": "sre"}
    if for_rules is not None:
        entry["for_rules"] = for_rules
    policy = Policy.from_mapping(with_steps(entry))
    request = make_request((OWNER,), level)
    (added,) = with_reached_escalations(
        policy, request, break_glass_rules(policy, owner_team="payments")
    )
    assert (added.name, added.widened_by) == ("second-rm", expected)
