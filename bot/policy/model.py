"""The sections of `quorum.yml` as frozen pydantic models; `Policy` is the whole file."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from bot.domain.delegation_rules import DEFAULT_MAX_PERIOD, DelegationRules
from bot.domain.model import RejectMode, Risk
from bot.domain.sla import EscalationStep as LadderStep
from bot.policy.types import (
    OWNER,
    WEEKDAYS,
    ClockTime,
    CronExpression,
    Duration,
    EmailAddress,
    Name,
    OnExpire,
    SlackChannelId,
    SlackUsergroupId,
    SlackUserId,
    Text,
    TimeZoneName,
    UnknownServiceMode,
    Weekday,
    _Model,
)

# --- the file's sections ---------------------------------------------------------------------


class TeamPolicy(_Model):
    """Who may approve: static members, a Slack user group resolved live, or both."""

    channel: SlackChannelId | None = None
    members: tuple[SlackUserId, ...] = ()
    usergroup: SlackUsergroupId | None = None

    @property
    def static_size(self) -> int | None:
        """How many people can approve for the team, when that is known without asking Slack."""
        return None if self.usergroup else len(self.members)


class ServicePolicy(_Model):
    owner: Name
    repos: tuple[Text, ...] = ()
    risk: Risk | None = None

    def matches_repository(self, repository: str) -> bool:
        # GitHub and GitLab treat repository paths case-insensitively.
        repo = repository.lower()
        return any(fnmatch.fnmatchcase(repo, glob.lower()) for glob in self.repos)


class RulePolicy(_Model):
    name: Name
    from_: Name = Field(alias="from")
    approvals: StrictInt = Field(ge=1)

    @property
    def from_owner(self) -> bool:
        return self.from_ == OWNER


class EscalationStep(_Model):
    after: Duration
    to: Name
    # The rules whose approvals `to` may also give once the step fires. None (absent): the
    # environment's `from: owner` rules; [] notifies only. Risk-tier and break-glass rules are
    # widened only when named here.
    for_rules: tuple[Name, ...] | None = None

    def ladder_step(self, env: EnvironmentPolicy) -> LadderStep:
        """This step of `env`'s ladder for the domain (bot/domain/sla.py), which decides which
        rules of a request it widens."""
        return LadderStep(
            after=self.after,
            team=self.to,
            for_rules=self.for_rules,
            owner_rules=tuple(rule.name for rule in env.rules if rule.from_owner),
        )


class BusinessHours(_Model):
    """SLA timers only run inside these hours (e.g. a 4h escalation waits over the weekend)."""

    days: tuple[Weekday, ...] = Field(default=WEEKDAYS[:5], min_length=1)
    start: ClockTime
    end: ClockTime
    timezone: TimeZoneName | None = None  # filled from the top-level timezone when loaded

    @model_validator(mode="after")
    def _window(self) -> BusinessHours:
        if self.start >= self.end:
            raise ValueError(
                f"start ({self.start:%H:%M}) must be before end ({self.end:%H:%M}); "
                "windows across midnight are not supported"
            )
        if len(set(self.days)) != len(self.days):
            raise ValueError("days lists a day more than once")
        return self

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")


class SlaPolicy(_Model):
    remind_after: Duration | None = None
    escalate: tuple[EscalationStep, ...] = ()
    expire_after: Duration | None = None
    on_expire: OnExpire = OnExpire.REJECT
    business_hours: BusinessHours | None = None


class RequireApprovalFrom(_Model):
    """`unmapped_requester: {require_approval_from: <team>}`: one more approval, from `team`."""

    require_approval_from: Name


class EnvironmentPolicy(_Model):
    rules: tuple[RulePolicy, ...] = Field(min_length=1)
    reject: RejectMode = RejectMode.ANY
    self_approval: StrictBool = False
    # What happens when the requester cannot be mapped to a Slack user (and self_approval is
    # false): `reject` (the default: fail closed), or one more approval from a named team.
    unmapped_requester: Literal["reject"] | RequireApprovalFrom = "reject"
    require_change_ticket: StrictBool = False
    risk: Risk | None = None
    sla: SlaPolicy | None = None


class RiskTier(_Model):
    extra_rules: tuple[RulePolicy, ...] = ()


class RecurringFreeze(_Model):
    name: Name
    environments: tuple[Text, ...] = ()  # empty: every environment
    services: tuple[Text, ...] = ()  # empty: every service
    cron: CronExpression
    zone: TimeZoneName | None = None  # filled from the top-level timezone when loaded
    duration: Duration
    reason: Text

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.zone or "UTC")


class BreakGlassPolicy(_Model):
    allowed: Name
    requires_reason: StrictBool = True
    extra_rules: tuple[RulePolicy, ...] = ()
    review_within: Duration | None = None


class DelegationPolicy(_Model):
    """Who may receive a delegation (`/approvals delegate`), for how long, and where it counts.
    Applied again to stored delegations on every vote, so a stricter policy governs old ones."""

    to: Name | None = None  # None: a delegate must share a team with the delegator
    # The schema shows the default as written in the file (pydantic would write ISO 8601).
    max_period: Duration = Field(DEFAULT_MAX_PERIOD, json_schema_extra={"default": "14d"})
    not_honoured_in: tuple[Name, ...] = ()  # environments where delegations never count

    @property
    def rules(self) -> DelegationRules:
        return DelegationRules(
            max_period=self.max_period, to=self.to, not_honoured_in=self.not_honoured_in
        )


class GitLabPolicy(_Model):
    """GitLab specifics (docs/pipelines/gitlab.md): the group or role the bot's approval
    represents in GitLab, per Quorum rule name, when the bot belongs to several approval rules."""

    represented_as: Mapping[Name, Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=dict
    )


class IdentitiesPolicy(_Model):
    github: Mapping[str, SlackUserId] = Field(default_factory=dict)
    gitlab: Mapping[str, SlackUserId] = Field(default_factory=dict)
    email: Mapping[EmailAddress, SlackUserId] = Field(default_factory=dict)
    email_lookup: StrictBool = False

    def slack_for_github(self, login: str) -> str | None:
        # GitHub logins are case-insensitive; a bot (`…[bot]`) is nobody's identity.
        wanted = login.lower()
        if wanted.endswith("[bot]"):
            return None
        return next((uid for name, uid in self.github.items() if name.lower() == wanted), None)

    def slack_for_gitlab(self, username: str) -> str | None:
        # GitLab usernames are case-insensitive.
        wanted = username.lower()
        return next((uid for name, uid in self.gitlab.items() if name.lower() == wanted), None)

    def slack_for_email(self, address: str) -> str | None:
        return self.email.get(address.strip().lower())


class DefaultsPolicy(_Model):
    channel: SlackChannelId
    unknown_service: UnknownServiceMode = UnknownServiceMode.ROUTE


class Policy(_Model):
    """A validated policy. Build it with `load_policy` or `Policy.from_mapping`, which also run
    the cross-reference checks (`model_validate` alone does not)."""

    version: Literal[1]
    timezone: TimeZoneName = "UTC"
    defaults: DefaultsPolicy
    teams: Mapping[Name, TeamPolicy] = Field(min_length=1)
    services: Mapping[Name, ServicePolicy] = Field(default_factory=dict)
    environments: Mapping[Name, EnvironmentPolicy] = Field(min_length=1)
    risk: Mapping[Risk, RiskTier] = Field(default_factory=dict)
    freezes: tuple[RecurringFreeze, ...] = ()
    release_managers: Name | None = None
    break_glass: BreakGlassPolicy | None = None
    identities: IdentitiesPolicy = Field(default_factory=IdentitiesPolicy)
    gitlab: GitLabPolicy = Field(default_factory=GitLabPolicy)
    delegation: DelegationPolicy = Field(default_factory=DelegationPolicy)

    @model_validator(mode="before")
    @classmethod
    def _default_zones(cls, data: Any) -> Any:
        """Freezes and business hours without a zone use the top-level timezone."""
        if not isinstance(data, Mapping):
            return data
        zone = data.get("timezone", "UTC")
        if not isinstance(zone, str) or not _is_zone(zone):
            return data  # the timezone's own error is reported; don't repeat it everywhere
        data = dict(data)
        freezes = data.get("freezes")
        if isinstance(freezes, list):
            data["freezes"] = [
                {**f, "zone": zone} if isinstance(f, Mapping) and f.get("zone") is None else f
                for f in freezes
            ]
        envs = data.get("environments")
        if isinstance(envs, Mapping):
            data["environments"] = {name: _fill_hours_zone(env, zone) for name, env in envs.items()}
        return data

    @classmethod
    def from_mapping(cls, data: object, source_name: str = "<policy>") -> Policy:
        """Validate already-parsed data; raises PolicyError listing every problem."""
        from bot.policy.loading import _validate  # loading imports the models

        return _validate(data, source_name)

    def team(self, name: str) -> TeamPolicy | None:
        return self.teams.get(name)

    def environment(self, name: str) -> EnvironmentPolicy | None:
        return self.environments.get(name)

    def service_for(
        self, service: str | None, repository: str | None
    ) -> tuple[str, ServicePolicy] | None:
        """The service a pipeline means: its exact name first, then the first service (in file
        order) with a repo glob matching `repository`; None when the policy does not know it."""
        if service and service in self.services:
            return service, self.services[service]
        if repository:
            for name, candidate in self.services.items():
                if candidate.matches_repository(repository):
                    return name, candidate
        return None

    def risk_rules(self, risk: Risk) -> Iterator[tuple[Risk, RulePolicy]]:
        """Extra rules for a request at `risk`: those of every tier up to and including it."""
        for tier in sorted(self.risk, key=lambda r: r.rank):
            if tier.rank <= risk.rank:
                for rule in self.risk[tier].extra_rules:
                    yield tier, rule


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _fill_hours_zone(env: Any, zone: str) -> Any:
    sla = env.get("sla") if isinstance(env, Mapping) else None
    if not isinstance(sla, Mapping):
        return env
    hours = sla.get("business_hours")
    if not isinstance(hours, Mapping) or hours.get("timezone") is not None:
        return env
    return {**env, "sla": {**sla, "business_hours": {**hours, "timezone": zone}}}
