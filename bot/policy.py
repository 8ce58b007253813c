"""The `quorum.yml` policy: pydantic models, loading, and validation reporting every error at once.

Each error reads `<file>: <key.path[i]>: <what was wrong and what was expected>`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import time, timedelta
from enum import StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

from bot.domain.durations import DURATION_PATTERN, format_duration, parse_duration
from bot.domain.model import RejectMode, Risk

__all__ = [
    "BreakGlassPolicy",
    "BusinessHours",
    "DefaultsPolicy",
    "EnvironmentPolicy",
    "EscalationStep",
    "IdentitiesPolicy",
    "OnExpire",
    "Policy",
    "PolicyError",
    "RecurringFreeze",
    "RiskTier",
    "RulePolicy",
    "ServicePolicy",
    "SlaPolicy",
    "TeamPolicy",
    "UnknownServiceMode",
    "load_policy",
    "policy_json_schema",
    "summary",
]

OWNER = "owner"  # `from: owner` in a rule: the owning team of the service being deployed

_SLACK_USER = r"^[UW][A-Z0-9]{2,}$"
_SLACK_USERGROUP = r"^S[A-Z0-9]{2,}$"
_SLACK_CHANNEL = r"^[CG][A-Z0-9]{2,}$"
_CLOCK = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class PolicyError(Exception):
    """The policy file is unusable. `errors` lists every problem, one line each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class OnExpire(StrEnum):
    REJECT = "reject"
    APPROVE = "approve"  # allowed only where the environment's risk is low


class UnknownServiceMode(StrEnum):
    ROUTE = "route"  # post to defaults.channel, marked "no owner"
    REJECT = "reject"  # refuse the request


# --- field types: each validator raises ValueError with the text the user will read -------------


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):  # Policy.from_mapping with Python values
        if value <= timedelta(0):
            raise ValueError(f"invalid duration {value!r}: must be longer than zero")
        return value
    if not isinstance(value, str):
        raise ValueError(
            "expected a duration such as 30s, 15m, 4h, 2d, 1w or 1h30m, "
            f"got {_describe(value)} (write the unit)"
        )
    return parse_duration(value)


def _clock(value: object) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or re.fullmatch(_CLOCK, value) is None:
        raise ValueError(
            f'expected a time of day as "HH:MM" (24-hour, e.g. "09:00"), got {_describe(value)}'
        )
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (expected an IANA name such as Europe/London or UTC)"
        ) from None
    return value


def _cron(value: str) -> str:
    fields = value.split()
    if not (len(fields) == 5 or (len(fields) == 1 and value.startswith("@"))):
        raise ValueError(
            f"invalid cron expression {value!r}: expected 5 fields (minute hour day-of-month "
            'month day-of-week), e.g. "0 18 28 3,6,9,12 *"'
        )
    if not croniter.is_valid(value):
        raise ValueError(
            f"invalid cron expression {value!r}: a field is malformed or out of range "
            "(minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6)"
        )
    return value


def _pattern_check(pattern: str, what: str, example: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not {what} (expected e.g. {example})")
        return value

    return AfterValidator(check)


def _email(value: str) -> str:
    if "@" not in value.strip("@"):
        raise ValueError(f"{value!r} is not an email address")
    return value.lower()


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Duration = Annotated[
    timedelta,
    PlainValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 30s, 15m, 4h, 2d, 1w or 1h30m",
        },
        mode="validation",
    ),
]
ClockTime = Annotated[
    time,
    PlainValidator(_clock),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _CLOCK}, mode="validation"),
]
TimeZoneName = Annotated[str, AfterValidator(_zone)]
CronExpression = Annotated[str, AfterValidator(_cron)]
SlackUserId = Annotated[
    str,
    _pattern_check(_SLACK_USER, "a Slack user id", "U0123ABCD"),
    WithJsonSchema({"type": "string", "pattern": _SLACK_USER}, mode="validation"),
]
SlackChannelId = Annotated[
    str,
    _pattern_check(_SLACK_CHANNEL, "a Slack channel id", "C0123ABCD"),
    WithJsonSchema({"type": "string", "pattern": _SLACK_CHANNEL}, mode="validation"),
]
SlackUsergroupId = Annotated[
    str,
    _pattern_check(_SLACK_USERGROUP, "a Slack user group id", "S0123ABCD"),
    WithJsonSchema({"type": "string", "pattern": _SLACK_USERGROUP}, mode="validation"),
]
Name = Annotated[
    str,
    _pattern_check(_NAME, "a valid name", "owner-review: letters, digits, '-', '_', '.'"),
    WithJsonSchema({"type": "string", "pattern": _NAME}, mode="validation"),
]
Text = Annotated[str, AfterValidator(_not_blank)]
EmailAddress = Annotated[str, AfterValidator(_email)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


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


class EnvironmentPolicy(_Model):
    rules: tuple[RulePolicy, ...] = Field(min_length=1)
    reject: RejectMode = RejectMode.ANY
    self_approval: StrictBool = False
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


class GitLabPolicy(_Model):
    """GitLab specifics (docs/pipelines/gitlab.md): the group or role the bot's approval
    represents in GitLab, per Quorum rule name, when the bot belongs to several approval rules."""

    represented_as: Mapping[Name, Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=dict
    )


class IdentitiesPolicy(_Model):
    github: Mapping[str, SlackUserId] = Field(default_factory=dict)
    email: Mapping[EmailAddress, SlackUserId] = Field(default_factory=dict)
    email_lookup: StrictBool = False

    def slack_for_github(self, login: str) -> str | None:
        # GitHub logins are case-insensitive.
        wanted = login.lower()
        return next((uid for name, uid in self.github.items() if name.lower() == wanted), None)

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


# --- public functions ------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises PolicyError naming the file in every line."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{source}: not UTF-8 text ({exc.reason})"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise PolicyError([f"{source}: {_yaml_error(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: invalid YAML: {exc}"]) from None
    return _validate(data, source)


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of quorum.yml, for editors (cross-references are checked only by Quorum)."""
    schema = Policy.model_json_schema(mode="validation", by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Quorum policy (quorum.yml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def summary(policy: Policy) -> str:
    """`ok: 6 teams, 2 services, 2 environments`."""
    counts = (
        (len(policy.teams), "team"),
        (len(policy.services), "service"),
        (len(policy.environments), "environment"),
    )
    return "ok: " + ", ".join(f"{n} {noun}{'' if n == 1 else 's'}" for n, noun in counts)


# --- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `17:30` as text, not YAML 1.1's base-60
    integer 1050 (business hours would otherwise silently become numbers)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | bool | float | NoneType) and key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    f"first {key!r} at line {first.line + 1}",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            if isinstance(key, str | int | bool | float | NoneType):
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_INT_TAG = "tag:yaml.org,2002:int"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"), list("-+0123456789")
)


def _yaml_error(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = exc.problem or "invalid YAML"
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}invalid YAML: {problem}{context}"


# --- validation ------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _validate(data: object, source: str) -> Policy:
    if data is None:
        raise PolicyError(
            [
                f"{source}: the file is empty "
                "(expected a mapping with version, defaults, teams and environments)"
            ]
        )
    if not isinstance(data, Mapping):
        raise PolicyError([f"{source}: expected a mapping at the top level, got {_describe(data)}"])
    problems: list[tuple[Loc, str]] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems.extend(_from_pydantic(error) for error in exc.errors(include_url=False))
    # Cross-references run on the raw data so they are reported alongside field errors.
    problems.extend(_References(data).check())
    if problems or policy is None:
        ordered = sorted(dict.fromkeys(problems), key=lambda p: _document_order(data, p[0]))
        raise PolicyError([_line(source, loc, message) for loc, message in ordered])
    return policy


def _line(source: str, loc: Loc, message: str) -> str:
    path = _format_loc(loc)
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _document_order(data: Any, loc: Loc) -> tuple[int, ...]:
    """Where the key path sits in the file, so errors read top to bottom."""
    key: list[int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            keys = list(node)
            key.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            key.append(part)
            node = node[part]
        else:
            key.append(0)
            node = None
    return tuple(key)


def _from_pydantic(error: ErrorDetails) -> tuple[Loc, str]:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        # A mapping key failed (e.g. an unknown risk tier or a badly formed name).
        loc = loc[:-1]
        return loc, f"invalid key: {_message(kind, value, ctx, error['msg'], loc)}"
    return loc, _message(kind, value, ctx, error["msg"], loc)


def _message(kind: str, value: Any, ctx: Mapping[str, Any], msg: str, loc: Loc) -> str:
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {loc[-1]!r}{hint}"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx.get("error", msg))
    if kind in {"enum", "literal_error"}:
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {value!r}"
    if kind == "string_type":
        return f"expected text, got {_describe(value)}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected a whole number, got {_describe(value)}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"expected true or false, got {_describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {value!r}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else msg
    if kind in {"tuple_type", "list_type"}:
        return f"expected a list, got {_describe(value)}"
    if kind in {"dict_type", "mapping_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping, got {_describe(value)}"
    return msg[0].lower() + msg[1:] if msg else kind


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts (for 'unknown key' messages)."""
    annotation: Any = Policy
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {(f.alias or n): f for n, f in annotation.model_fields.items()}
            if part not in fields:
                return []
            annotation = fields[str(part)].annotation
        elif get_origin(annotation) is tuple:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in {dict, Mapping}:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or n for n, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in {Union, UnionType}:
            members = [a for a in get_args(annotation) if a is not NoneType]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _try_duration(value: Any) -> timedelta | None:
    try:
        return _duration(value)
    except ValueError:
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
