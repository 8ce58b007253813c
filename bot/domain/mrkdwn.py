"""Slack message text that is safe to send: the `Mrkdwn` type and the only ways to build it.

Pure. Slack's mrkdwn treats `&`, `<` and `>` as control characters: `<!channel>`, `<!here>`,
`<!everyone>`, `<!subteam^S…>`, `<@U…>`, `<#C…>` and `<https://…|label>` are mentions and links
(https://docs.slack.dev/messaging/formatting-message-text#escaping). Anything that came from a
webhook or a person (versions, branches, titles, reasons, names) must reach Slack escaped, while
the mentions Quorum means (a voter, a release manager, a channel of the policy) must not be.

The rule, enforced by the types: every text the `Chat` and `Announcer` ports send is a
`Mrkdwn`, and a `Mrkdwn` is built only here (and by the card renderer, `handlers/blocks.py`,
which escapes each field itself):

- `escape(value)` — untrusted text, escaped (a `Mrkdwn` passes unchanged: it is already safe);
- `md("template {} …", *values)` — a template Quorum wrote (a literal, never built from input)
  filled with values that are escaped unless they are `Mrkdwn` already;
- `user`, `channel`, `usergroup`, `HERE`, `link`, `code` — the markup Quorum means, from ids
  that are checked (`<@{id}>` only for `^[UW][A-Z0-9]+$`; anything else is shown escaped);
- `join`, `strip` keep the type; `stored` re-reads a text that was a `Mrkdwn` when it was
  stored (the durable message queue).

A plain `str` handed to a port is a type error (mypy), and `as_mrkdwn` at the edges (the Slack
client, slash-command replies) escapes whatever plain `str` still arrives, so forgetting can
only over-escape, never ping `@channel`. String operations (`+`, f-strings, slicing) return a
plain `str`: combine with `md` or `join` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "HERE",
    "Mrkdwn",
    "as_mrkdwn",
    "channel",
    "code",
    "escape",
    "join",
    "link",
    "md",
    "stored",
    "strip",
    "user",
    "usergroup",
]

_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
_USERGROUP_ID = re.compile(r"S[A-Z0-9]+")
_MAX_URL = 1000


class Mrkdwn(str):
    """Text that may be sent to Slack as mrkdwn as it is: every untrusted part in it is escaped
    and every mention or link in it is one Quorum meant. Build it with this module's functions."""

    __slots__ = ()


HERE: Final = Mrkdwn("<!here>")


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape(value: str) -> Mrkdwn:
    """`value` shown as written: `&`, `<`, `>` escaped, so it cannot mention or link anything.
    A `Mrkdwn` is returned unchanged (it is safe already; escaping it again would show `&amp;`)."""
    if isinstance(value, Mrkdwn):
        return value
    return Mrkdwn(_escaped(value))


def as_mrkdwn(value: str) -> Mrkdwn:
    """At an edge: a `Mrkdwn` as it is, any other text escaped whole."""
    return escape(value)


def _fill(value: object) -> Mrkdwn:
    return value if isinstance(value, Mrkdwn) else Mrkdwn(_escaped(str(value)))


def md(template: str, *values: object, **named: object) -> Mrkdwn:
    """`template` (Quorum's own words and markup, a literal) with `{}` / `{name}` filled by
    `values`: each escaped unless it is a `Mrkdwn` already."""
    return Mrkdwn(
        template.format(*(_fill(v) for v in values), **{k: _fill(v) for k, v in named.items()})
    )


def join(separator: str, parts: Iterable[object]) -> Mrkdwn:
    """`separator` (a literal) between `parts`, each escaped unless it is a `Mrkdwn`."""
    return Mrkdwn(separator.join(_fill(part) for part in parts))


def strip(value: str, chars: str | None = None) -> Mrkdwn:
    """`value` without leading and trailing `chars` (whitespace), keeping it safe."""
    return Mrkdwn(escape(value).strip(chars))


def user(user_id: str) -> Mrkdwn:
    """`<@U…>` for a well-formed Slack user id; anything else escaped, mentioning nobody."""
    if _USER_ID.fullmatch(user_id):
        return Mrkdwn(f"<@{user_id}>")
    return escape(user_id)


def channel(channel_id: str) -> Mrkdwn:
    """`<#C…>` for a well-formed channel id; anything else escaped."""
    if _CHANNEL_ID.fullmatch(channel_id):
        return Mrkdwn(f"<#{channel_id}>")
    return escape(channel_id)


def usergroup(usergroup_id: str) -> Mrkdwn:
    """`<!subteam^S…>` for a well-formed user group id (from the policy); anything else escaped."""
    if _USERGROUP_ID.fullmatch(usergroup_id):
        return Mrkdwn(f"<!subteam^{usergroup_id}>")
    return escape(usergroup_id)


def link(url: str, label: str) -> Mrkdwn:
    """`<url|label>` for an http(s) URL Slack can render (`label` escaped); the label alone
    otherwise, so a malformed URL cannot break out of the link."""
    text = escape(" ".join(label.split()))
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c in url for c in "<>| \t\r\n")
        or len(url) > _MAX_URL
    ):
        return text
    return Mrkdwn(f"<{url.replace('&', '&amp;')}|{text}>")


def code(value: str) -> Mrkdwn:
    """`value` as inline code (escaped; backticks, which would end it, become quotes)."""
    inner = _escaped(value).replace("`", "'")
    return Mrkdwn(f"`{inner}`")


def stored(text: str) -> Mrkdwn:
    """A text read back from storage that was a `Mrkdwn` when it was written (the message
    queue's `text` column: `OutgoingMessage.text` is typed `Mrkdwn`). Nothing else."""
    return Mrkdwn(text)
