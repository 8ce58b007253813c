"""Who is the requester in Slack? Static resolution from the pipeline's identity and the policy."""

from __future__ import annotations

import re
from dataclasses import replace

from bot.domain.model import Requester
from bot.policy import Policy
from bot.routing import Route

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


def is_slack_user_id(value: str) -> bool:
    return bool(_SLACK_USER.match(value))


def resolve_static(policy: Policy, requester: Requester) -> Requester:
    """Map the requester to a Slack user without calling Slack: an explicit Slack id, then the
    policy's identity map (GitHub login, email). Leaves `slack_user` None when neither applies."""
    if requester.slack_user:
        return requester
    user: str | None = None
    if requester.slack and is_slack_user_id(requester.slack):
        user = requester.slack
    if user is None and requester.github:
        user = policy.identities.slack_for_github(requester.github)
    if user is None and requester.gitlab:
        user = policy.identities.slack_for_gitlab(requester.gitlab)
    if user is None and requester.email:
        user = policy.identities.slack_for_email(requester.email)
    if user is None:
        return requester
    return replace(requester, slack_user=user)


def parse_requester_arg(value: str) -> Requester:
    """`--requested-by` of `quorum explain`: a Slack user id, an email, or a GitHub login."""
    if is_slack_user_id(value):
        return Requester(slack=value)
    if "@" in value:
        return Requester(email=value)
    return Requester(github=value)


def describe_requester(policy: Policy, route: Route, value: str) -> str:
    resolved = resolve_static(policy, parse_requester_arg(value))
    if resolved.slack_user is None:
        how = (
            "would be looked up by email in Slack (users.lookupByEmail)"
            if resolved.email and policy.identities.email_lookup
            else "cannot be mapped to a Slack user"
            + (
                ""
                if route.self_approval
                else (
                    f"; one approval from {route.unmapped_requester_team} is also required"
                    if route.unmapped_requester_team
                    else "; the request would be refused (unmapped_requester: reject)"
                )
            )
        )
        return f"requested by {value}: {how}"
    who = f"<@{resolved.slack_user}>"
    if route.self_approval:
        return f"requested by {value} = {who}: self-approval is allowed here"
    return f"requested by {value} = {who}: may not approve this request (self_approval: false)"
