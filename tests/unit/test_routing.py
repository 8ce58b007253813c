"""Routing over the example policy: service → owner → channel, environment and risk → rules."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.domain.model import RejectMode, Risk, Rule
from bot.policy import OnExpire, Policy, load_policy
from bot.routing import (
    NoOwner,
    Route,
    RoutingError,
    UnknownEnvironment,
    UnknownService,
    break_glass_rules,
    explain,
    route,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quorum.yml"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(EXAMPLE)


def example_data() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def go(
    policy: Policy,
    *,
    service: str | None = None,
    repository: str | None = None,
    environment: str = "production",
    risk: Risk | None = None,
) -> Route:
    return route(policy, service=service, repository=repository, environment=environment, risk=risk)


def test_known_service_by_name(policy: Policy) -> None:
    r = go(policy, service="payments-api")

    assert r.service == "payments-api"
    assert r.owner_team == "payments"
    assert r.channel == "C0PAYMENTS"
    assert r.channel_reason == "the channel of owner team payments"
    assert r.rules == (
        Rule("owner-review", "payments", 2, "environment"),
        Rule("sre-signoff", "sre", 1, "environment"),
        Rule("security-review", "security", 1, "risk:high"),  # payments-api is high risk
    )
    assert r.risk is Risk.HIGH
    assert r.risk_reason == "set by service payments-api"
    # Notified: the card channel, then the other approving teams' channels (security has none).
    assert r.notify_channels == ("C0PAYMENTS", "C0SRE")
    assert r.reject_mode is RejectMode.ANY
    assert r.self_approval is False
    assert r.require_change_ticket is True
    assert r.on_expire is OnExpire.REJECT
    assert r.warnings == ()


def test_known_service_by_repository_glob(policy: Policy) -> None:
    r = go(policy, repository="acme/storefront-checkout")

    assert (r.service, r.owner_team, r.channel) == ("storefront", "web", "C0WEB")
    assert r.requested_service == "acme/storefront-checkout"
    assert [rule.team for rule in r.rules] == ["web", "sre"]
    assert r.risk is Risk.LOW
    assert r.warnings == ()


def test_unknown_name_but_known_repository_routes_by_repository(policy: Policy) -> None:
    r = go(policy, service="shop", repository="acme/storefront")
    assert r.service == "storefront"
    assert r.warnings == (
        "service 'shop' is not in the policy; matched 'storefront' by repository 'acme/storefront'",
    )


@pytest.mark.parametrize(
    ("service", "environment", "request_risk", "expected_risk", "security_review"),
    [
        ("storefront", "production", None, Risk.LOW, False),
        ("storefront", "production", Risk.MEDIUM, Risk.MEDIUM, False),
        ("storefront", "production", Risk.HIGH, Risk.HIGH, True),  # the request raises it
        ("payments-api", "production", Risk.LOW, Risk.HIGH, True),  # the service's wins
        ("payments-api", "production", None, Risk.HIGH, True),  # the service's applies
        ("storefront", "staging", None, Risk.LOW, False),  # staging's own risk is low
    ],
)
def test_effective_risk_is_the_highest(
    policy: Policy,
    service: str,
    environment: str,
    request_risk: Risk | None,
    expected_risk: Risk,
    security_review: bool,
) -> None:
    r = go(policy, service=service, environment=environment, risk=request_risk)
    assert r.risk is expected_risk
    extra = [rule for rule in r.rules if rule.origin == "risk:high"]
    assert extra == (
        [Rule("security-review", "security", 1, "risk:high")] if security_review else []
    )


def test_unknown_service_is_routed_to_the_default_channel(policy: Policy) -> None:
    r = go(policy, service="ledger", environment="production")

    assert r.service is None
    assert r.requested_service == "ledger"
    assert r.owner_team is None
    assert r.channel == "C0DEPLOYS"
    assert r.channel_reason == "the default channel: no owner"
    # The owner's approval is not dropped: release managers stand in for the missing owner.
    assert r.rules[0] == Rule("owner-review", "release-managers", 2, "environment")
    assert r.warnings == (
        "no owner: service 'ledger' is not in the policy",
        "no owner: rule 'owner-review' needs approval from release-managers (release managers) "
        "instead of the owning team",
    )


def test_unknown_repository_warning_names_the_repository(policy: Policy) -> None:
    r = go(policy, repository="acme/ledger", environment="staging")
    assert r.warnings[0] == "no owner: repository 'acme/ledger' matches no service in the policy"


def test_unknown_service_is_rejected_when_the_policy_says_so() -> None:
    data = example_data()
    data["defaults"]["unknown_service"] = "reject"
    policy = Policy.from_mapping(data)

    with pytest.raises(UnknownService) as info:
        go(policy, service="ledger")
    assert str(info.value) == (
        "unknown service: service 'ledger' matches no service in the policy, and the policy "
        "rejects unknown services (known: payments-api, storefront)"
    )
    assert isinstance(info.value, RoutingError)


def test_unknown_service_without_release_managers() -> None:
    data = example_data()
    del data["release_managers"]
    data["break_glass"]["allowed"] = "cab"
    data["environments"]["ops"] = {"rules": [{"name": "sre", "from": "sre", "approvals": 1}]}
    policy = Policy.from_mapping(data)

    with pytest.raises(NoOwner, match="rule 'owner-review' needs the owning team's approval"):
        go(policy, service="ledger")
    # Environments whose rules do not involve the owner still route.
    r = go(policy, service="ledger", environment="ops")
    assert r.rules == (Rule("sre", "sre", 1, "environment"),)


def test_stand_in_team_too_small_is_warned_about() -> None:
    data = example_data()
    data["teams"]["release-managers"]["members"] = ["U0RM1"]
    data["break_glass"]["extra_rules"] = []
    policy = Policy.from_mapping(data)

    r = go(policy, service="ledger")
    assert (
        "rule 'owner-review' needs 2 approvals but team release-managers has only 1 static "
        "member: it cannot be met"
    ) in r.warnings


def test_unknown_environment_names_the_known_ones(policy: Policy) -> None:
    with pytest.raises(UnknownEnvironment) as info:
        go(policy, service="storefront", environment="prod")
    assert str(info.value) == "unknown environment 'prod' (known: production, staging, uat)"
    assert info.value.known == ["production", "staging", "uat"]


def test_owner_team_without_a_channel_falls_back_to_the_default_channel() -> None:
    data = example_data()
    data["services"]["scanner"] = {"owner": "security", "repos": ["acme/scanner"]}
    policy = Policy.from_mapping(data)

    r = go(policy, service="scanner", environment="staging")
    assert r.owner_team == "security"
    assert r.channel == "C0DEPLOYS"
    assert r.channel_reason == "the default channel: owner team security has no channel"
    assert r.rules == (Rule("owner-review", "security", 1, "environment"),)


def test_auto_approval_on_expiry_only_for_low_risk(policy: Policy) -> None:
    assert go(policy, service="storefront", environment="staging").on_expire is OnExpire.APPROVE

    risky = go(policy, service="payments-api", environment="staging")
    assert risky.on_expire is OnExpire.REJECT
    assert "on expiry this request is rejected, not approved: its risk is high" in risky.warnings


def test_no_expiry_without_expire_after() -> None:
    data = example_data()
    del data["environments"]["production"]["sla"]
    policy = Policy.from_mapping(data)
    r = go(policy, service="storefront")
    assert r.sla is None
    assert r.on_expire is None


def test_route_is_immutable(policy: Policy) -> None:
    r = go(policy, service="storefront")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.channel = "C0OTHER"  # type: ignore[misc]


def test_break_glass_rules(policy: Policy) -> None:
    r = go(policy, service="storefront")
    assert break_glass_rules(policy, r) == (
        Rule("second-release-manager", "release-managers", 1, "break-glass"),
    )


def test_explain_a_known_service(policy: Policy) -> None:
    r = go(policy, service="payments-api")
    assert explain(policy, r, requester="U0PAYDEV1").splitlines() == [
        "payments-api → production",
        "Owner: payments",
        "Channel: C0PAYMENTS (the channel of owner team payments)",
        "Also notified: C0SRE (channels of the other approving teams)",
        "Risk: high (set by service payments-api)",
        "Rules (every rule must be met; one person counts once per request):",
        "  1. owner-review: 2 approvals from payments; applies by environment production "
        "(from: owner → payments)",
        "     eligible: static members: <@U0PAYLEAD>, <@U0PAYDEV1>, <@U0PAYDEV2>, <@U0PAYDEV3> "
        "(not <@U0PAYDEV1>: the requester may not approve)",
        "  2. sre-signoff: 1 approval from sre; applies by environment production",
        "     eligible: members of Slack user group S0SREONCALL (resolved live) "
        "(not <@U0PAYDEV1> if in the group: the requester may not approve)",
        "  3. security-review: 1 approval from security; applies by risk tier high "
        "(request risk high)",
        "     eligible: static members: <@U0SEC1>, <@U0SEC2>",
        "Reject mode: any (one eligible rejection rejects the request)",
        "Self-approval: not allowed (the requester's own approval does not count)",
        "Unknown requester: the request is rejected (separation of duties cannot be enforced)",
        "Change ticket: required",
        "SLA: remind after 15m; escalate to sre after 1h, to cab after 4h; "
        "expire after 1d, then reject",
        "Escalation (who may approve what after each step):",
        # the default: the from: owner rules; never security-review, which no step names
        "  after 1h: sre is notified and may also approve owner-review",
        "  after 4h: cab is notified and may also approve owner-review, sre-signoff",
    ]


def test_explain_an_unknown_service_with_business_hours(policy: Policy) -> None:
    text = explain(policy, go(policy, service="ledger", environment="uat"))
    assert text.startswith("ledger (unknown) → uat\nOwner: none\n")
    assert "Channel: C0DEPLOYS (the default channel: no owner)" in text
    assert "Reject mode: quorum" in text
    assert re.search(
        r"^SLA: remind after 30m; escalate to release-managers after 2h; expire after 2d, then "
        r"reject; timers run only in business hours \(mon, tue, wed, thu, fri 09:00-17:30 "
        r"Europe/London\)$",
        text,
        re.MULTILINE,
    )
    assert "Warning: no owner: service 'ledger' is not in the policy" in text


def test_explain_without_sla(policy: Policy) -> None:
    data = example_data()
    del data["environments"]["production"]["sla"]
    bare = Policy.from_mapping(data)
    text = explain(bare, go(bare, service="storefront"))
    assert "SLA: none (the request waits until it is decided)" in text
