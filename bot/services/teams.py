"""Who is in a team right now: static members plus the Slack user group, if the team has one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.services.deps import Deps


async def team_members(deps: Deps, teams: Iterable[str]) -> Mapping[str, frozenset[str]]:
    """Members of each named team (the Directory caches user groups for a few minutes)."""
    members: dict[str, frozenset[str]] = {}
    for name in set(teams):
        team = deps.policy.team(name)
        if team is None:  # the policy changed under an open request: nobody is eligible via it
            members[name] = frozenset()
            continue
        people = set(team.members)
        if team.usergroup:
            people |= await deps.directory.usergroup_members(team.usergroup)
        members[name] = frozenset(people)
    return members
