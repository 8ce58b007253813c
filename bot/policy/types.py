"""Field types of the policy file: durations, clock times, zones, cron, Slack ids, names;
each validator raises ValueError with the text the user will read."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from bot.domain.durations import DURATION_PATTERN, format_duration, parse_duration
from bot.domain.freezes import Cron, CronError, CronUnsupported
from bot.domain.text import control_character_message, is_blank

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
    # The runtime matcher's own parser: what loads is what the freeze sweep can evaluate.
    try:
        Cron.parse(value)
    except CronUnsupported as exc:
        raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
    except CronError:
        raise ValueError(
            f"invalid cron expression {value!r}: a field is malformed or out of range "
            "(minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6)"
        ) from None
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
    if (problem := control_character_message(value)) is not None:
        raise ValueError(problem)
    if is_blank(value):  # zero-width characters alone are no text either
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


# --- shared by loading and the reference checks ---------------------------------------------

Loc = tuple[str | int, ...]


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


def _try_duration(value: Any) -> timedelta | None:
    try:
        return _duration(value)
    except ValueError:
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
