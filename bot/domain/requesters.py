"""Separation of duties when Quorum cannot tell who asked for a deployment (pure).

A request whose requester maps to no Slack user cannot enforce "never the requester", so an
environment without self-approval either refuses it or demands one more approval from a named
team (`unmapped_requester` in the policy). Fails closed: the default is to refuse.
"""

from __future__ import annotations

from bot.domain.model import Requester, Rule

UNMAPPED_RULE = "requester-unknown"
UNMAPPED_ORIGIN = "unmapped-requester"


def needs_policy(requester: Requester, self_approval: bool) -> bool:
    """Whether the unmapped-requester policy applies: no Slack user, not still being checked,
    and the environment forbids self-approval."""
    return not self_approval and requester.slack_user is None and not requester.checking


def unmapped_rule(team: str) -> Rule:
    """The extra rule `unmapped_requester: {require_approval_from: team}` adds."""
    return Rule(name=UNMAPPED_RULE, team=team, approvals=1, origin=UNMAPPED_ORIGIN)


def named_as(requester: Requester) -> str:
    """How the pipeline named the requester, for the explanation."""
    names = [
        f"{kind} {value!r}"
        for kind, value in (
            ("Slack user", requester.slack),
            ("GitHub login", requester.github),
            ("GitLab username", requester.gitlab),
            ("email", requester.email),
        )
        if value
    ]
    return " / ".join(names) or "nobody (no requester was named)"


def unmapped_reason(requester: Requester, environment: str) -> str:
    """Why an unmapped requester's request is refused (HTTP 422 text, provider rejection)."""
    return (
        f"requested_by: Quorum cannot map the requester ({named_as(requester)}) to a Slack "
        f"user, so it cannot keep them from approving their own deploy to {environment} "
        "(self_approval: false, unmapped_requester: reject). Name the requester by Slack user "
        "id, or map their GitHub login, GitLab username or email under `identities` in the "
        "policy."
    )
