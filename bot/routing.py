"""Routing: which channel hears about a deployment and which rules decide it (pure over a Policy).

Service → owning team → that team's channel (else `defaults.channel`); environment → rules; risk
tier → extra rules. Who is *notified* (channels) is kept apart from who may *approve* (rules).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.durations import format_duration
from bot.domain.model import RejectMode, Risk, Rule
from bot.domain.sla import widened_names
from bot.policy import OnExpire, Policy, RulePolicy, SlaPolicy, UnknownServiceMode

__all__ = [
    "NoOwner",
    "Route",
    "RoutingError",
    "UnknownEnvironment",
    "UnknownService",
    "break_glass_rules",
    "explain",
    "route",
]


class RoutingError(Exception):
    """The request cannot be routed under this policy; the message says why, for the requester."""


class UnknownEnvironment(RoutingError):
    def __init__(self, environment: str, known: list[str]) -> None:
        self.environment = environment
        self.known = known
        super().__init__(
            f"unknown environment {environment!r} (known: {', '.join(known) or 'none'})"
        )


class UnknownService(RoutingError):
    """Raised only where the policy says `defaults.unknown_service: reject`."""

    def __init__(self, requested: str | None, known: list[str]) -> None:
        self.requested = requested
        self.known = known
        what = f"service {requested!r}" if requested else "a request that names no service"
        super().__init__(
            f"unknown service: {what} matches no service in the policy, and the policy rejects "
            f"unknown services (known: {', '.join(known) or 'none'})"
        )


class NoOwner(RoutingError):
    """A `from: owner` rule applies to a service nobody owns and no release managers stand in."""

    def __init__(self, requested: str | None, rule: str) -> None:
        self.requested = requested
        self.rule = rule
        super().__init__(
            f"no owner: {requested or 'the service'!r} is not in the policy, rule {rule!r} needs "
            "the owning team's approval, and the policy names no release_managers to stand in"
        )


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes and what decides it. `rules[i]` applies because of `rule_reasons[i]`."""

    environment: str
    service: str | None  # the policy's service name; None when the policy does not know it
    requested_service: str | None  # what the pipeline named (service, else repository)
    owner_team: str | None
    channel: str  # where the card is posted
    channel_reason: str
    notify_channels: tuple[str, ...]  # the card channel first, then other approving teams'
    rules: tuple[Rule, ...]
    rule_reasons: tuple[str, ...]
    risk: Risk  # effective: the highest of the request's, the service's and the environment's
    risk_reason: str
    reject_mode: RejectMode
    self_approval: bool
    require_change_ticket: bool
    sla: SlaPolicy | None
    # The team that must also approve when the requester cannot be mapped; None: such a
    # request is rejected (ignored when self-approval is allowed).
    unmapped_requester_team: str | None
    on_expire: OnExpire | None  # None: the request never expires; APPROVE only at low risk
    warnings: tuple[str, ...] = ()


def route(
    policy: Policy,
    *,
    service: str | None,
    repository: str | None,
    environment: str,
    risk: Risk | None,
) -> Route:
    """Route one request. Raises UnknownEnvironment, UnknownService (policy says reject) or NoOwner.

    An unknown service (routed mode) goes to `defaults.channel` with a "no owner" warning, and
    its `from: owner` rules are given to the release managers: never silently dropped (that
    would lower the bar) and never left unsatisfiable (the request would hang until it expired).
    """
    env = policy.environment(environment)
    if env is None:
        raise UnknownEnvironment(environment, sorted(policy.environments))
    requested = service or repository
    warnings: list[str] = []

    found = policy.service_for(service, repository)
    if found is None:
        if policy.defaults.unknown_service is UnknownServiceMode.REJECT:
            raise UnknownService(requested, sorted(policy.services))
        if service:
            warnings.append(f"no owner: service {service!r} is not in the policy")
        elif repository:
            warnings.append(f"no owner: repository {repository!r} matches no service in the policy")
        else:
            warnings.append("no owner: the request names no service or repository")
        service_name, owner_team, service_risk = None, None, None
    else:
        service_name, service_policy = found
        owner_team, service_risk = service_policy.owner, service_policy.risk
        if service and service != service_name:
            warnings.append(
                f"service {service!r} is not in the policy; matched {service_name!r} "
                f"by repository {repository!r}"
            )

    owner_policy = policy.team(owner_team) if owner_team else None
    if owner_policy is not None and owner_policy.channel:
        channel = owner_policy.channel
        channel_reason = f"the channel of owner team {owner_team}"
    elif owner_team:
        channel = policy.defaults.channel
        channel_reason = f"the default channel: owner team {owner_team} has no channel"
    else:
        channel, channel_reason = policy.defaults.channel, "the default channel: no owner"

    effective, risk_reason = _effective_risk(
        (risk, "the request"),
        (service_risk, f"service {service_name}"),
        (env.risk, f"environment {environment}"),
    )

    def resolve(rule: RulePolicy, origin: str, why: str) -> tuple[Rule, str]:
        team = rule.from_
        if rule.from_owner:
            if owner_team is not None:
                team, why = owner_team, f"{why} (from: owner → {owner_team})"
            elif policy.release_managers is not None:
                team = policy.release_managers
                why = f"{why} (from: owner; no owner → release managers)"
                warnings.append(
                    f"no owner: rule {rule.name!r} needs approval from "
                    f"{policy.release_managers} (release managers) instead of the owning team"
                )
            else:
                raise NoOwner(requested, rule.name)
        return Rule(name=rule.name, team=team, approvals=rule.approvals, origin=origin), why

    resolved = [resolve(r, "environment", f"environment {environment}") for r in env.rules]
    resolved += [
        resolve(r, f"risk:{tier}", f"risk tier {tier} (request risk {effective})")
        for tier, r in policy.risk_rules(effective)
    ]
    rules = tuple(rule for rule, _ in resolved)

    for rule in rules:
        size = _static_size(policy, rule.team)
        if size is not None and size < rule.approvals:
            warnings.append(
                f"rule {rule.name!r} needs {rule.approvals} approvals but team {rule.team} has "
                f"only {size} static member{'' if size == 1 else 's'}: it cannot be met"
            )

    on_expire: OnExpire | None = None
    if env.sla is not None and env.sla.expire_after is not None:
        on_expire = env.sla.on_expire
        # The policy allows auto-approval only for low-risk environments; a riskier service or
        # request deployed there must not slip through on a timer.
        if on_expire is OnExpire.APPROVE and effective is not Risk.LOW:
            on_expire = OnExpire.REJECT
            warnings.append(
                f"on expiry this request is rejected, not approved: its risk is {effective}"
            )

    notify = [channel]
    for rule in rules:
        team = policy.team(rule.team)
        if team is not None and team.channel and team.channel not in notify:
            notify.append(team.channel)

    return Route(
        environment=environment,
        service=service_name,
        requested_service=requested,
        owner_team=owner_team,
        channel=channel,
        channel_reason=channel_reason,
        notify_channels=tuple(notify),
        rules=rules,
        rule_reasons=tuple(why for _, why in resolved),
        risk=effective,
        risk_reason=risk_reason,
        reject_mode=env.reject,
        self_approval=env.self_approval,
        require_change_ticket=env.require_change_ticket,
        sla=env.sla,
        unmapped_requester_team=(
            None
            if isinstance(env.unmapped_requester, str)
            else env.unmapped_requester.require_approval_from
        ),
        on_expire=on_expire,
        warnings=tuple(dict.fromkeys(warnings)),
    )


def break_glass_rules(
    policy: Policy,
    route: Route | None = None,
    *,
    owner_team: str | None = None,
    broken_by: str | None = None,
) -> tuple[Rule, ...]:
    """The extra rules a break-glass request adds (`from: owner` resolved as in `route`, or to
    `owner_team`). Whoever breaks glass (`broken_by`) may not fill them."""
    if policy.break_glass is None:
        return ()
    owner = route.owner_team if route is not None else owner_team
    rules: list[Rule] = []
    for rule in policy.break_glass.extra_rules:
        team = rule.from_
        if rule.from_owner:
            team = owner or policy.release_managers or policy.break_glass.allowed
        rules.append(
            Rule(
                name=rule.name,
                team=team,
                approvals=rule.approvals,
                origin="break-glass",
                excluded=(broken_by,) if broken_by else (),
            )
        )
    return tuple(rules)


def explain(policy: Policy, route: Route, *, requester: str | None = None) -> str:
    """Human-readable account of a route, for `quorum explain`. `requester` is a Slack user id."""
    what = route.service or (
        f"{route.requested_service} (unknown)" if route.requested_service else "(no service)"
    )
    lines = [
        f"{what} → {route.environment}",
        f"Owner: {route.owner_team or 'none'}",
        f"Channel: {route.channel} ({route.channel_reason})",
    ]
    others = route.notify_channels[1:]
    if others:
        lines.append(f"Also notified: {', '.join(others)} (channels of the other approving teams)")
    lines.append(f"Risk: {route.risk} ({route.risk_reason})")
    lines.append("Rules (every rule must be met; one person counts once per request):")
    for i, (rule, why) in enumerate(zip(route.rules, route.rule_reasons, strict=True), start=1):
        lines.append(
            f"  {i}. {rule.name}: {rule.approvals} approval{'s' if rule.approvals != 1 else ''} "
            f"from {rule.team}; applies by {why}"
        )
        lines.append(f"     eligible: {_eligible(policy, rule.team, route, requester)}")
    lines.append(f"Reject mode: {_reject_text(route.reject_mode)}")
    lines.append(
        "Self-approval: allowed"
        if route.self_approval
        else "Self-approval: not allowed (the requester's own approval does not count)"
    )
    if not route.self_approval:
        lines.append(
            "Unknown requester: "
            + (
                f"one approval from {route.unmapped_requester_team} is also required"
                if route.unmapped_requester_team
                else "the request is rejected (separation of duties cannot be enforced)"
            )
        )
    lines.append(
        "Change ticket: required" if route.require_change_ticket else "Change ticket: not required"
    )
    lines.append(f"SLA: {_sla_text(route)}")
    lines.extend(_escalation_lines(policy, route))
    lines.extend(f"Warning: {w}" for w in route.warnings)
    return "\n".join(lines)


def _effective_risk(*candidates: tuple[Risk | None, str]) -> tuple[Risk, str]:
    present = [(r, why) for r, why in candidates if r is not None]
    if not present:
        return Risk.LOW, "default: nothing sets a risk"
    top = Risk.highest(*(r for r, _ in present))
    return top, "set by " + " and ".join(why for r, why in present if r is top)


def _static_size(policy: Policy, team_name: str) -> int | None:
    team = policy.team(team_name)
    return team.static_size if team is not None else None


def _eligible(policy: Policy, team_name: str, route: Route, requester: str | None) -> str:
    team = policy.team(team_name)
    if team is None:  # cannot happen for a validated policy; say so rather than crash
        return f"unknown team {team_name!r}"
    parts: list[str] = []
    if team.members:
        parts.append("static members: " + ", ".join(f"<@{m}>" for m in team.members))
    if team.usergroup:
        parts.append(f"members of Slack user group {team.usergroup} (resolved live)")
    text = " and ".join(parts) or "nobody"
    if requester and not route.self_approval:
        if requester in team.members:
            text += f" (not <@{requester}>: the requester may not approve)"
        elif team.usergroup:
            text += f" (not <@{requester}> if in the group: the requester may not approve)"
    return text


def _reject_text(mode: RejectMode) -> str:
    if mode is RejectMode.ANY:
        return "any (one eligible rejection rejects the request)"
    return "quorum (a rule is rejected once as many of its approvers reject as it needs)"


def _escalation_lines(policy: Policy, route: Route) -> list[str]:
    """Who may approve what after each escalation step: a step widens only the rules it names
    (`for_rules`, by default the `from: owner` ones), never every rule of the request."""
    env = policy.environment(route.environment)
    if env is None or route.sla is None or not route.sla.escalate:
        return []
    glass = break_glass_rules(policy, route)
    lines = ["Escalation (who may approve what after each step):"]
    for step in route.sla.escalate:
        ladder = step.ladder_step(env)
        names = widened_names(route.rules, ladder)
        later = widened_names(glass, ladder)
        text = f"  after {format_duration(step.after)}: {step.to} is notified"
        if names:
            text += f" and may also approve {', '.join(names)}"
            if later:
                text += f" (after break glass also {', '.join(later)})"
        elif later:
            text += f" (after break glass it may also approve {', '.join(later)})"
        else:
            text += " only (it may approve no rule it could not already)"
        lines.append(text)
    return lines


def _sla_text(route: Route) -> str:
    sla = route.sla
    if sla is None:
        return "none (the request waits until it is decided)"
    parts: list[str] = []
    if sla.remind_after is not None:
        parts.append(f"remind after {format_duration(sla.remind_after)}")
    if sla.escalate:
        steps = ", ".join(f"to {s.to} after {format_duration(s.after)}" for s in sla.escalate)
        parts.append(f"escalate {steps}")
    if sla.expire_after is not None and route.on_expire is not None:
        parts.append(f"expire after {format_duration(sla.expire_after)}, then {route.on_expire}")
    else:
        parts.append("never expires")
    hours = sla.business_hours
    if hours is not None:
        parts.append(
            f"timers run only in business hours ({', '.join(hours.days)} "
            f"{hours.start:%H:%M}-{hours.end:%H:%M} {hours.timezone or 'UTC'})"
        )
    return "; ".join(parts)
