"""Checks that span keys of the raw policy data: names refer to things that exist, numbers fit
the teams, ladders go up."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bot.domain.durations import format_duration
from bot.domain.model import Risk
from bot.domain.requesters import UNMAPPED_RULE
from bot.policy.types import OWNER, Loc, OnExpire, _count, _format_loc, _try_duration


class _References:
    """Checks that span keys: names refer to things that exist, numbers fit the teams, ladders go
    up. Works on the raw data, defensively, skipping values whose own shape is wrong (pydantic
    reports those), so every independent problem is reported in one run."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.problems: list[tuple[Loc, str]] = []
        teams = data.get("teams")
        self.teams: Mapping[Any, Any] | None = teams if isinstance(teams, Mapping) else None
        envs = data.get("environments")
        self.envs: Mapping[Any, Any] | None = envs if isinstance(envs, Mapping) else None
        services = data.get("services", {})
        # None when malformed: references to services cannot be checked then.
        self.known_services: Mapping[Any, Any] | None = (
            services if isinstance(services, Mapping) else None
        )
        self.services: Mapping[Any, Any] = self.known_services or {}
        self.static_size: dict[str, int] = {}
        for name, team in (self.teams or {}).items():
            if not isinstance(team, Mapping) or team.get("usergroup") is not None:
                continue
            members = team.get("members")
            if isinstance(members, list):
                self.static_size[str(name)] = len(set(map(str, members)))
        # Rule names must be unique within one request: the environment's, every risk tier's
        # (tiers add up) and break-glass rules end up side by side.
        self.shared_rule_names: dict[str, Loc] = {}

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append((loc, message))

    def check(self) -> list[tuple[Loc, str]]:
        self._teams()
        for name, service in self.services.items():
            if isinstance(service, Mapping):
                self._team_ref(("services", name, "owner"), service.get("owner"))
        env_rule_names: dict[str, Loc] = {}
        for name, env in (self.envs or {}).items():
            if isinstance(env, Mapping):
                names = self._rules(("environments", name, "rules"), env.get("rules"), {})
                for rule_name, loc in names.items():
                    env_rule_names.setdefault(rule_name, loc)
                self._sla(name, env)
        self.shared_rule_names = env_rule_names
        risk = self.data.get("risk")
        for tier, body in (risk if isinstance(risk, Mapping) else {}).items():
            if isinstance(body, Mapping):
                self._extra_rules(("risk", tier, "extra_rules"), body.get("extra_rules"))
        self._team_ref(("release_managers",), self.data.get("release_managers"))
        glass = self.data.get("break_glass")
        if isinstance(glass, Mapping):
            self._team_ref(("break_glass", "allowed"), glass.get("allowed"))
            self._extra_rules(("break_glass", "extra_rules"), glass.get("extra_rules"))
        self._freezes()
        envs = self.data.get("environments")
        for env_name, env in (envs if isinstance(envs, Mapping) else {}).items():
            unmapped = env.get("unmapped_requester") if isinstance(env, Mapping) else None
            if isinstance(unmapped, Mapping):
                self._team_ref(
                    ("environments", env_name, "unmapped_requester", "require_approval_from"),
                    unmapped.get("require_approval_from"),
                )
        delegation = self.data.get("delegation")
        if isinstance(delegation, Mapping):
            self._team_ref(("delegation", "to"), delegation.get("to"))
            self._names_exist(
                ("delegation", "not_honoured_in"),
                delegation.get("not_honoured_in"),
                self.envs,
                "environment",
            )
        return self.problems

    def _teams(self) -> None:
        for name, team in (self.teams or {}).items():
            if name == OWNER:
                self.add(
                    ("teams", name),
                    "'owner' is reserved: in a rule, from: owner means the service's owning team",
                )
            if not isinstance(team, Mapping):
                continue
            if not team.get("members") and team.get("usergroup") is None:
                self.add(("teams", name), "a team needs members, a usergroup, or both")
            members = team.get("members")
            if isinstance(members, list):
                seen: set[str] = set()
                for i, member in enumerate(members):
                    if not isinstance(member, str):
                        continue
                    if member in seen:
                        self.add(("teams", name, "members", i), f"duplicate member {member!r}")
                    seen.add(member)

    def _team_ref(self, loc: Loc, value: Any, *, allow_owner: bool = False) -> None:
        if self.teams is None or not isinstance(value, str):
            return
        if allow_owner and value == OWNER:
            return
        if value not in self.teams:
            known = ", ".join(sorted(map(str, self.teams)))
            self.add(loc, f"unknown team {value!r} (known: {known})")

    def _rules(self, loc: Loc, rules: Any, names: dict[str, Loc]) -> dict[str, Loc]:
        if not isinstance(rules, list):
            return names
        for i, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                continue
            here = (*loc, i)
            source = rule.get("from")
            self._team_ref((*here, "from"), source, allow_owner=True)
            self._approvals((*here, "approvals"), source, rule.get("approvals"))
            name = rule.get("name")
            if isinstance(name, str):
                if name in names:
                    self.add(
                        (*here, "name"),
                        f"duplicate rule name {name!r} (also {_format_loc(names[name])})",
                    )
                else:
                    names[name] = (*here, "name")
        return names

    def _extra_rules(self, loc: Loc, rules: Any) -> None:
        # Checked against the environments' rule names and every other extra rule seen so far.
        before = dict(self.shared_rule_names)
        names = self._rules(loc, rules, {})
        for name, where in names.items():
            if name in before:
                self.add(
                    where,
                    f"rule name {name!r} is already used by {_format_loc(before[name])}; "
                    "rule names must be unique within a request",
                )
            else:
                self.shared_rule_names[name] = where

    def _approvals(self, loc: Loc, source: Any, approvals: Any) -> None:
        if not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 1:
            return
        if source == OWNER:
            for service_name, service in self.services.items():
                owner = service.get("owner") if isinstance(service, Mapping) else None
                size = self.static_size.get(owner) if isinstance(owner, str) else None
                if size is not None and size < approvals:
                    self.add(
                        loc,
                        f"needs {approvals} approvals from the owning team, but service "
                        f"{service_name!r} is owned by {owner!r}, which has only "
                        f"{_count(size, 'static member')}",
                    )
        elif isinstance(source, str) and source in self.static_size:
            size = self.static_size[source]
            if size < approvals:
                self.add(
                    loc,
                    f"needs {approvals} approvals but team {source!r} has only "
                    f"{_count(size, 'static member')}",
                )

    def _sla(self, env_name: Any, env: Mapping[str, Any]) -> None:
        sla = env.get("sla")
        if not isinstance(sla, Mapping):
            return
        loc: Loc = ("environments", env_name, "sla")
        expire = _try_duration(sla.get("expire_after"))
        remind = _try_duration(sla.get("remind_after"))
        if remind is not None and expire is not None and remind >= expire:
            self.add(
                (*loc, "remind_after"),
                f"must be shorter than expire_after ({format_duration(expire)})",
            )
        ladder = sla.get("escalate")
        previous: timedelta | None = None
        for i, step in enumerate(ladder if isinstance(ladder, list) else []):
            if not isinstance(step, Mapping):
                continue
            self._team_ref((*loc, "escalate", i, "to"), step.get("to"))
            self._for_rules((*loc, "escalate", i, "for_rules"), step.get("for_rules"), env)
            after = _try_duration(step.get("after"))
            if after is None:
                continue
            if previous is not None and after <= previous:
                self.add(
                    (*loc, "escalate", i, "after"),
                    f"must be later than the previous step ({format_duration(previous)}): "
                    "escalation steps go up in time",
                )
            if expire is not None and after >= expire:
                self.add(
                    (*loc, "escalate", i, "after"),
                    f"must be shorter than expire_after ({format_duration(expire)})",
                )
            previous = after
        if sla.get("on_expire") == OnExpire.APPROVE.value:
            risk = env.get("risk")
            if risk != Risk.LOW.value:
                shown = f"is {risk!r}" if risk is not None else "is not set"
                self.add(
                    (*loc, "on_expire"),
                    f"approve is only allowed where the environment's risk is low (its risk "
                    f"{shown}; add risk: low to environment {env_name!r} or use reject)",
                )
            if sla.get("expire_after") is None:
                self.add((*loc, "on_expire"), "approve needs expire_after")

    def _for_rules(self, loc: Loc, names: Any, env: Mapping[str, Any]) -> None:
        """Each rule an escalation step names must be one a request of this environment can
        have: the environment's own, a risk tier's or break-glass's extra rules, and the rule an
        unmapped requester adds where `unmapped_requester` requires an approval."""
        if not isinstance(names, list):
            return
        known = _rule_names(env.get("rules"))
        if isinstance(env.get("unmapped_requester"), Mapping):
            known.add(UNMAPPED_RULE)
        risk = self.data.get("risk")
        for body in (risk if isinstance(risk, Mapping) else {}).values():
            if isinstance(body, Mapping):
                known |= _rule_names(body.get("extra_rules"))
        glass = self.data.get("break_glass")
        if isinstance(glass, Mapping):
            known |= _rule_names(glass.get("extra_rules"))
        for j, name in enumerate(names):
            if isinstance(name, str) and name not in known:
                listed = ", ".join(sorted(known)) or "none"
                self.add((*loc, j), f"unknown rule {name!r} (known: {listed})")

    def _freezes(self) -> None:
        freezes = self.data.get("freezes")
        names: dict[str, int] = {}
        for i, freeze in enumerate(freezes if isinstance(freezes, list) else []):
            if not isinstance(freeze, Mapping):
                continue
            name = freeze.get("name")
            if isinstance(name, str):
                if name in names:
                    self.add(
                        ("freezes", i, "name"),
                        f"duplicate freeze name {name!r} (also freezes[{names[name]}])",
                    )
                names.setdefault(name, i)
            self._names_exist(
                ("freezes", i, "environments"), freeze.get("environments"), self.envs, "environment"
            )
            self._names_exist(
                ("freezes", i, "services"), freeze.get("services"), self.known_services, "service"
            )

    def _names_exist(
        self, loc: Loc, values: Any, known: Mapping[Any, Any] | None, what: str
    ) -> None:
        if known is None or not isinstance(values, list):
            return
        for j, value in enumerate(values):
            if isinstance(value, str) and value not in known:
                listed = ", ".join(sorted(map(str, known))) or "none"
                self.add((*loc, j), f"unknown {what} {value!r} (known: {listed})")


def _rule_names(rules: Any) -> set[str]:
    """The names of a raw list of rules (entries of the wrong shape are skipped)."""
    if not isinstance(rules, list):
        return set()
    return {
        rule["name"]
        for rule in rules
        if isinstance(rule, Mapping) and isinstance(rule.get("name"), str)
    }
