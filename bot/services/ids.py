"""Identifiers: time-sortable, URL-safe, unguessable enough to show in Slack and URLs."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str, now: datetime) -> str:
    """`<prefix>_` + 10 chars of milliseconds + 10 random chars (e.g. `req_01jd3…`)."""
    millis = int(now.timestamp() * 1000)
    stamp = "".join(_ALPHABET[(millis >> shift) & 31] for shift in range(45, -1, -5))
    rand = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{prefix}_{stamp}{rand}"


_ID = re.compile(r"[a-z]{1,16}_[0-9a-z]{1,64}")


def looks_like_id(text: str) -> bool:
    """Whether `text` has the shape of an id `new_id` makes (a prefix, `_`, base32): anything
    else names nothing, and need not be looked up."""
    return _ID.fullmatch(text) is not None
