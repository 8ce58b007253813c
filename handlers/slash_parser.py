"""Slash-command text → typed commands (pure). Forgiving about case, commas and spacing; every
error is one exact sentence that says what could not be read and what would work."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time

from bot.domain.durations import parse_duration
from bot.domain.when import WEEKDAYS, AtTime, ForDuration, TimeSpec

TIME_HINT = "try 'for 2h' or 'until 2026-12-01 18:00'"
FREEZE_USAGE = (
    "Usage: /freeze <environments|all> [for 2h | until 2026-12-01 18:00] [services a,b] <reason>"
    " — or /freeze list"
)
UNFREEZE_USAGE = "Usage: /unfreeze <freeze-id|environment|all>"
APPROVALS_HELP = "\n".join(
    (
        "*/approvals* — what you can do:",
        "• `/approvals pending` — requests waiting on you, with links to their cards",
        "• `/approvals delegate @user until mon 09:00 [environments …]` — let @user vote for you",
        "• `/approvals delegations` — your delegations",
        "• `/approvals undelegate [@user]` — end your delegations (or the one to @user)",
        "• `/approvals breakglass <request-id> <reason>` — release managers: override a freeze "
        "with extra approvals",
        "• `/approvals review <request-id> <summary>` — release managers: record the "
        "post-incident review of a break-glass deployment",
        "• `/freeze …`, `/unfreeze …`, `/freeze list` — release managers: deployment freezes",
    )
)

_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_RAW_USER = re.compile(r"^@?([UW][A-Z0-9]{2,})$")
_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DATETIME = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})[tT](\d{1,2}:\d{2})$")
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")
_SPOKEN_UNITS = {
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "week": "w",
    "weeks": "w",
}
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ParseError(ValueError):
    """The command text could not be read; `message` is the sentence to show the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FreezeCommand:
    environments: tuple[str, ...]  # empty: all environments
    services: tuple[str, ...]  # empty: all services
    until: TimeSpec | None  # None: until someone ends it
    reason: str


@dataclass(frozen=True, slots=True)
class FreezeListCommand:
    pass


@dataclass(frozen=True, slots=True)
class UnfreezeCommand:
    target: str  # a freeze id, an environment, or "all"


@dataclass(frozen=True, slots=True)
class PendingCommand:
    pass


@dataclass(frozen=True, slots=True)
class DelegateCommand:
    delegate: str  # Slack user id
    until: TimeSpec
    environments: tuple[str, ...]  # empty: every environment


@dataclass(frozen=True, slots=True)
class DelegationsCommand:
    pass


@dataclass(frozen=True, slots=True)
class UndelegateCommand:
    delegate: str | None  # None: every delegation of mine


@dataclass(frozen=True, slots=True)
class HelpCommand:
    unknown: str | None = None  # the subcommand that was not understood, if any


@dataclass(frozen=True, slots=True)
class BreakGlassCommand:
    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReviewCommand:
    request_id: str
    summary: str


ApprovalsCommand = (
    PendingCommand
    | DelegateCommand
    | DelegationsCommand
    | UndelegateCommand
    | HelpCommand
    | BreakGlassCommand
    | ReviewCommand
)


# --- entry points ---------------------------------------------------------------------------------


def parse_freeze(
    text: str, *, environments: Sequence[str], services: Sequence[str]
) -> FreezeCommand | FreezeListCommand:
    """`/freeze <environments|all> [for <duration> | until <time>] [services a,b] <reason>` or
    `/freeze list`. `environments` and `services` are the names the policy knows."""
    tokens = _tokens(text)
    if not tokens:
        raise ParseError(f"Tell me what to freeze. {FREEZE_USAGE}")
    if len(tokens) == 1 and tokens[0].lower() in ("list", "ls"):
        return FreezeListCommand()
    envs, rest = _environments(tokens, environments)
    until: TimeSpec | None = None
    scoped: tuple[str, ...] = ()
    while rest:
        keyword = rest[0].lower()
        if keyword in ("for", "until", "till", "to") and until is None:
            until, rest = _when(keyword, rest[1:])
        elif keyword in ("services", "service") and not scoped:
            scoped, rest = _names(rest[1:], services, "service")
        else:
            break
    reason = _reason(rest)
    if not reason:
        raise ParseError(f"A freeze needs a reason (it is shown on every card). {FREEZE_USAGE}")
    return FreezeCommand(environments=envs, services=scoped, until=until, reason=reason)


def parse_unfreeze(text: str) -> UnfreezeCommand:
    tokens = _tokens(text)
    if len(tokens) != 1:
        raise ParseError(
            f"Tell me one freeze to end. {UNFREEZE_USAGE}"
            if not tokens
            else f"I can end one freeze at a time. {UNFREEZE_USAGE}"
        )
    return UnfreezeCommand(target=tokens[0].strip(","))


def parse_approvals(text: str, *, environments: Sequence[str]) -> ApprovalsCommand:
    tokens = _tokens(text)
    if not tokens:
        return HelpCommand()
    sub, rest = tokens[0].lower(), tokens[1:]
    if sub in ("help", "?", "-h", "--help"):
        return HelpCommand()
    if sub in ("pending", "todo", "mine"):
        return PendingCommand()
    if sub in ("delegations", "delegates"):
        return DelegationsCommand()
    if sub in ("undelegate", "revoke"):
        if not rest:
            return UndelegateCommand(delegate=None)
        return UndelegateCommand(delegate=_user(rest[0]))
    if sub in ("delegate", "delegate-to"):
        return _delegate(rest, environments)
    if sub in ("breakglass", "break-glass", "break_glass"):
        request_id, reason = _request_and_text(rest, "breakglass", "reason")
        return BreakGlassCommand(request_id=request_id, reason=reason)
    if sub == "review":
        request_id, summary = _request_and_text(rest, "review", "summary")
        return ReviewCommand(request_id=request_id, summary=summary)
    return HelpCommand(unknown=tokens[0])


# --- pieces ---------------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    # Slack escapes &, < and > in command text; mentions stay as <@U…|name>.
    return text.replace("\u00a0", " ").split()


def _environments(tokens: list[str], known: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    if tokens[0].lower() == "all":
        return (), tokens[1:]
    names: list[str] = []
    rest = tokens
    while rest:
        parts = [p for p in rest[0].split(",") if p]
        matched = [_match(p, known) for p in parts]
        if not parts or any(m is None for m in matched):
            if not names:
                bad = next((p for p, m in zip(parts, matched, strict=True) if m is None), rest[0])
                raise ParseError(
                    f"unknown environment {bad!r} (known: {', '.join(sorted(known)) or 'none'}); "
                    f"name environments or 'all' first. {FREEZE_USAGE}"
                )
            break
        names.extend(m for m in matched if m is not None)
        rest = rest[1:]
    return tuple(dict.fromkeys(names)), rest


def _match(name: str, known: Sequence[str]) -> str | None:
    lowered = {k.lower(): k for k in known}
    return lowered.get(name.lower())


def _names(tokens: list[str], known: Sequence[str], what: str) -> tuple[tuple[str, ...], list[str]]:
    """A comma list (`a,b`, `a, b` or `a , b`) of known names; the rest is returned."""
    names: list[str] = []
    rest = tokens
    expect_more = True
    while rest and expect_more:
        token = rest[0]
        parts = [p for p in token.split(",") if p]
        for part in parts:
            matched = _match(part, known)
            if matched is None:
                raise ParseError(
                    f"unknown {what} {part!r} (known: {', '.join(sorted(known)) or 'none'})"
                )
            names.append(matched)
        expect_more = token.endswith(",") or (len(rest) > 1 and rest[1].startswith(","))
        rest = rest[1:]
    if not names:
        raise ParseError(f"name at least one {what} after '{what}s', e.g. '{what}s a,b'")
    return tuple(dict.fromkeys(names)), rest


def _when(keyword: str, tokens: list[str]) -> tuple[TimeSpec, list[str]]:
    if not tokens:
        raise ParseError(f"'{keyword}' needs a time after it; {TIME_HINT}")
    if keyword == "for":
        return _duration(tokens)
    return _moment(tokens)


def _duration(tokens: list[str]) -> tuple[ForDuration, list[str]]:
    first = tokens[0].lower()
    # "2 hours", "90 minutes": a number and a spoken unit as two words.
    if first.isdigit() and len(tokens) > 1 and tokens[1].lower() in _SPOKEN_UNITS:
        text, rest = first + _SPOKEN_UNITS[tokens[1].lower()], tokens[2:]
    else:
        match = re.fullmatch(r"(\d+)\s*([a-z]+)", first)
        text, rest = first, tokens[1:]
        if match and match.group(2) in _SPOKEN_UNITS:
            text = match.group(1) + _SPOKEN_UNITS[match.group(2)]
    try:
        return ForDuration(parse_duration(text)), rest
    except ValueError:
        raise ParseError(f"could not read {tokens[0]!r} as a duration; {TIME_HINT}") from None


def _moment(tokens: list[str]) -> tuple[AtTime, list[str]]:
    first = tokens[0]
    lowered = first.lower()
    combined = _DATETIME.fullmatch(first)
    if combined:
        return AtTime(at=_clock(combined.group(2), first), on=_date(combined.group(1))), tokens[1:]
    day: dict[str, object] = {}
    if _DATE.fullmatch(first):
        day = {"on": _date(first)}
    elif lowered in ("today", "tonight"):
        day = {"days_ahead": 0}
    elif lowered in ("tomorrow", "tmrw", "tmr"):
        day = {"days_ahead": 1}
    elif lowered[:3] in WEEKDAYS and (lowered in WEEKDAYS or lowered in _FULL_WEEKDAYS):
        day = {"weekday": WEEKDAYS.index(lowered[:3])}
    if day:
        rest = tokens[1:]
        if rest and _looks_like_clock(rest[0]):
            at, rest = _clock_tokens(rest)
            return AtTime(at=at, **day), rest  # type: ignore[arg-type]
        return AtTime(at=time(0, 0), **day), rest  # type: ignore[arg-type]
    if _looks_like_clock(first):
        at, rest = _clock_tokens(tokens)
        return AtTime(at=at), rest
    raise ParseError(f"could not read {first!r} as a time; {TIME_HINT}")


def _looks_like_clock(token: str) -> bool:
    return _CLOCK.fullmatch(token.lower()) is not None and (
        ":" in token or token.lower().endswith(("am", "pm"))
    )


def _clock_tokens(tokens: list[str]) -> tuple[time, list[str]]:
    text, rest = tokens[0], tokens[1:]
    # "9 am" written as two words.
    if rest and rest[0].lower() in ("am", "pm") and not text.lower().endswith(("am", "pm")):
        text, rest = text + rest[0], rest[1:]
    return _clock(text, tokens[0]), rest


def _clock(text: str, shown: str) -> time:
    match = _CLOCK.fullmatch(text.lower())
    if match is None:
        raise ParseError(f"could not read {shown!r} as a time; {TIME_HINT}")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    meridiem = match.group(3)
    if meridiem is not None:
        if not 1 <= hour <= 12:
            raise ParseError(f"could not read {shown!r} as a time; {TIME_HINT}")
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59:
        raise ParseError(f"could not read {shown!r} as a time; {TIME_HINT}")
    return time(hour, minute)


def _date(text: str) -> date:
    match = _DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise ParseError(f"could not read {text!r} as a date; {TIME_HINT}") from None


def _reason(tokens: list[str]) -> str:
    return html.unescape(" ".join(tokens)).strip()


def _user(token: str) -> str:
    match = _USER.fullmatch(token) or _RAW_USER.fullmatch(token)
    if match is None:
        raise ParseError(
            f"could not read {token!r} as a person; mention them, e.g. '/approvals delegate "
            "@alex until mon 09:00'"
        )
    return match.group(1)


def _delegate(tokens: list[str], environments: Sequence[str]) -> DelegateCommand:
    usage = "e.g. '/approvals delegate @alex until mon 09:00 [environments production]'"
    if not tokens:
        raise ParseError(f"Tell me who may vote for you; {usage}")
    delegate = _user(tokens[0])
    rest = tokens[1:]
    if not rest or rest[0].lower() not in ("until", "till", "for", "to"):
        raise ParseError(f"Say until when the delegation lasts; {usage}")
    until, rest = _when(rest[0].lower(), rest[1:])
    envs: tuple[str, ...] = ()
    if rest:
        if rest[0].lower() in ("environments", "environment", "envs", "env", "in", "for"):
            rest = rest[1:]
        if rest and not (len(rest) == 1 and rest[0].lower() == "all"):
            envs, leftover = _names(_split_spaces(rest), environments, "environment")
            if leftover:
                raise ParseError(f"could not read {' '.join(leftover)!r}; {usage}")
    return DelegateCommand(delegate=delegate, until=until, environments=envs)


def _split_spaces(tokens: list[str]) -> list[str]:
    # Environments after a delegation may be separated by spaces or commas: make it one list.
    return [",".join(p for t in tokens for p in t.split(",") if p)]


def _request_and_text(tokens: list[str], sub: str, what: str) -> tuple[str, str]:
    if not tokens:
        raise ParseError(f"Usage: /approvals {sub} <request-id> <{what}>")
    request_id = tokens[0].strip("`")
    text = _reason(tokens[1:])
    if not text:
        raise ParseError(f"/approvals {sub} needs a {what} after the request id")
    return request_id, text
