"""Slack's v0 request signing, correct and every way of getting it wrong."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.e2e.harness import SIGNING_SECRET
from tests.fuzz.running import Outgoing

GOOD = "good"
DUPLICATED = "duplicated"  # a good and a wrong signature header both present
BAD_MODES = (
    "wrong_secret",
    "no_signature",
    "no_timestamp",
    "no_headers",
    "stale",
    "future",
    "huge_timestamp",
    "far_timestamp",
    "negative_timestamp",
    "text_timestamp",
    "float_timestamp",
    "empty_timestamp",
    "other_body",
    "v1_prefix",
    "truncated",
    "uppercase",
)


def v0(secret: str, stamp: str, body: bytes) -> str:
    base = b"v0:" + stamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SlackRequest:
    body: bytes
    content_type: str | None
    mode: str

    def outgoing(self, now: int) -> Outgoing:
        stamp, secret, signed = str(now), SIGNING_SECRET, self.body
        headers: list[tuple[str, str]] = []
        mode = self.mode
        if mode == "wrong_secret":
            secret = "not-the-signing-secret"
        elif mode == "stale":
            stamp = str(now - 400)
        elif mode == "future":
            stamp = str(now + 400)
        elif mode == "huge_timestamp":
            stamp = "999999999999"
        elif mode == "far_timestamp":
            stamp = "253402300800"
        elif mode == "negative_timestamp":
            stamp = "-1"
        elif mode == "text_timestamp":
            stamp = "now"
        elif mode == "float_timestamp":
            stamp = f"{now}.5"
        elif mode == "empty_timestamp":
            stamp = ""
        elif mode == "other_body":
            signed = self.body + b"x"
        signature = v0(secret, stamp, signed)
        if mode == "v1_prefix":
            signature = "v1=" + signature[3:]
        elif mode == "truncated":
            signature = signature[:-2]
        elif mode == "uppercase":
            signature = "v0=" + signature[3:].upper()
        if mode not in {"no_timestamp", "no_headers"}:
            headers.append(("X-Slack-Request-Timestamp", stamp))
        if mode not in {"no_signature", "no_headers"}:
            headers.append(("X-Slack-Signature", signature))
        if mode == DUPLICATED:
            headers.append(("X-Slack-Signature", v0("wrong", stamp, signed)))
        return Outgoing("POST", "/slack/events", self.body, headers, self.content_type)


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
WRONG_TYPES: tuple[str | None, ...] = (
    None,
    "text/plain",
    "application/xml",
    "multipart/form-data",
    "application/octet-stream",
    "application/x-www-form-urlencoded; charset=bogus-charset",
    "application/json; charset=latin-1",
    "garbage",
)
modes = st.sampled_from((GOOD, GOOD, GOOD, DUPLICATED, *BAD_MODES))
