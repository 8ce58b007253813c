"""The policy's `delegation:` section as pure rules: who may receive a delegation, for how long,
and where it is honoured. `delegation_refusal` answers `/approvals delegate`;
`honoured_delegations` is the filter the vote path applies to delegations already stored, so a
stricter policy also governs delegations made under a looser one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain import mrkdwn
from bot.domain.model import Delegation
from bot.domain.mrkdwn import md

DEFAULT_MAX_PERIOD = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class DelegationRules:
    """What the policy allows. `to`: the team whose members may receive delegations; None means
    a delegate must share a team with the delegator."""

    max_period: timedelta = DEFAULT_MAX_PERIOD
    to: str | None = None
    not_honoured_in: tuple[str, ...] = ()  # environments where delegations never count


@dataclass(frozen=True, slots=True)
class TeamMembers:
    """Members per team as far as they are known. A team in `partial` may have members beyond
    those in `known` (its Slack user group was not asked): it is given the benefit of the doubt.
    At `/approvals delegate` every team is asked, so nothing is partial there."""

    known: Mapping[str, frozenset[str]]
    partial: frozenset[str] = frozenset()

    def may_include(self, team: str, user: str) -> bool:
        members = self.known.get(team)
        return team in self.partial or (members is not None and user in members)

    def teams_of(self, user: str) -> tuple[str, ...]:
        """The teams `user` is (or, for a partial team, may be) a member of, sorted."""
        return tuple(sorted(t for t in {*self.known, *self.partial} if self.may_include(t, user)))

    def with_resolved(self, resolved: Mapping[str, frozenset[str]]) -> TeamMembers:
        """These members, with the complete members of the teams in `resolved` filled in."""
        if not resolved:
            return self
        return TeamMembers({**self.known, **resolved}, self.partial.difference(resolved))


@dataclass(frozen=True, slots=True)
class DelegationTerms:
    """The rules with the team members known without asking Slack: what the vote path applies
    to stored delegations on every click."""

    rules: DelegationRules
    teams: TeamMembers

    def honoured(
        self,
        delegations: Sequence[Delegation],
        *,
        delegate: str,
        environment: str,
        now: datetime,
        resolved: Mapping[str, frozenset[str]],
    ) -> Sequence[Delegation]:
        """`honoured_delegations`, with the complete members of the teams in `resolved` (those
        the vote path asked Slack about anyway) filled in. Cheap when the clicker holds none."""
        if not any(d.delegate == delegate for d in delegations):
            return ()
        return honoured_delegations(
            delegations,
            self.rules,
            self.teams.with_resolved(resolved),
            delegate=delegate,
            environment=environment,
            now=now,
        )


def delegation_refusal(
    *,
    delegator: str,
    delegate: str,
    period: timedelta,
    environments: Sequence[str],
    rules: DelegationRules,
    teams: TeamMembers,
) -> str | None:
    """None when `delegator` may let `delegate` vote in their place for `period` in
    `environments` (empty: every environment); else why not, as the sentence shown to them."""
    return terms_refusal(
        delegator=delegator,
        delegate=delegate,
        period=period,
        environments=environments,
        rules=rules,
    ) or team_refusal(delegator, delegate, rules, teams)


def terms_refusal(
    *,
    delegator: str,
    delegate: str,
    period: timedelta,
    environments: Sequence[str],
    rules: DelegationRules,
) -> str | None:
    """The part of `delegation_refusal` that needs nobody's team (checked before Slack is
    asked who the people are)."""
    if delegate == delegator:
        return "You cannot delegate to yourself."
    if period > rules.max_period:
        limit = rules.max_period
        return (
            f"A delegation may last at most {human_duration(limit)}; ask for 'for "
            f"{_days_or_duration(limit)}' or an earlier 'until' (the policy's "
            "delegation.max_period)."
        )
    if environments and all(env in rules.not_honoured_in for env in environments):
        return (
            f"Delegations are never honoured in {_names(environments)} (the policy's "
            "delegation.not_honoured_in), so this one would never count."
        )
    return None


def team_refusal(
    delegator: str, delegate: str, rules: DelegationRules, teams: TeamMembers
) -> str | None:
    """None when `delegate` is in the team the rules let delegations go to."""
    if rules.to is not None:
        if teams.may_include(rules.to, delegate):
            return None
        return md(
            "{} is not in the team {}, and the policy lets delegations go only to its members "
            "(delegation.to).",
            mrkdwn.user(delegate),
            repr(rules.to),
        )
    mine = teams.teams_of(delegator)
    if not mine:
        return "You are not in any team, so you have no approvals to delegate."
    if any(teams.may_include(team, delegate) for team in mine):
        return None
    return md(
        "{} is not in any team you approve for ({}); a delegate must share one of your teams.",
        mrkdwn.user(delegate),
        _names(mine),
    )


def not_honoured(environments: Sequence[str], rules: DelegationRules) -> tuple[str, ...]:
    """Where a delegation for `environments` (empty: every environment) will not count."""
    if not environments:
        return rules.not_honoured_in
    return tuple(env for env in environments if env in rules.not_honoured_in)


def honoured_until(delegation: Delegation, rules: DelegationRules) -> datetime:
    """When the delegation stops counting: its end, or `max_period` after it was made, whichever
    comes first (a delegation stored under a longer limit is cut short by a shorter one)."""
    return min(delegation.ends_at, delegation.created_at + rules.max_period)


def honoured_delegations(
    delegations: Sequence[Delegation],
    rules: DelegationRules,
    teams: TeamMembers,
    *,
    delegate: str,
    environment: str,
    now: datetime,
) -> tuple[Delegation, ...]:
    """The delegations made to `delegate` that the current rules honour on a vote in
    `environment` at `now` (whether each is active then is for `active_delegators` to say)."""
    mine = [d for d in delegations if d.delegate == delegate]
    if not mine:
        return ()  # the common case: the clicker holds no delegation
    if environment in rules.not_honoured_in:
        return ()
    return tuple(
        d
        for d in mine
        if now < honoured_until(d, rules)
        and team_refusal(d.delegator, d.delegate, rules, teams) is None
    )


def human_duration(value: timedelta) -> str:
    """`14 days`, `1 day 12 hours`, `90 minutes`, for sentences (policy files use `2w`)."""
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if n
    ]
    return " ".join(parts) or "0 seconds"


def _days_or_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{max(1, seconds // 60)}m"


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)
