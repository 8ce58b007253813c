"""Signing pipeline webhooks for the fuzz suite: Standard Webhooks (generic, GitLab's signing
secret), X-Hub-Signature-256 (GitHub) and X-Gitlab-Token, correct and wrong in every way."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools

from hypothesis import strategies as st

from tests.fuzz.running import GITHUB_SECRET, GITLAB_TOKEN

GOOD = "good"
DUPLICATED = "duplicated"  # the header twice: a wrong value first, then the right one
STANDARD_BAD = (
    "wrong_secret",
    "no_signature",
    "no_id",
    "no_timestamp",
    "stale",
    "future",
    "huge_timestamp",
    "far_timestamp",
    "negative_timestamp",
    "text_timestamp",
    "float_timestamp",
    "empty_timestamp",
    "long_timestamp",
    "other_body",
    "v2_prefix",
    "truncated",
    "too_many",
    "long_id",
    "not_base64",
)
HUB_BAD = ("wrong_secret", "no_signature", "sha1_only", "not_hex", "other_body", "no_delivery")
TOKEN_BAD = ("wrong_token", "no_token", "empty_token", "token_prefix")
standard_modes = st.sampled_from((GOOD, GOOD, GOOD, DUPLICATED, *STANDARD_BAD))
hub_modes = st.sampled_from((GOOD, GOOD, GOOD, DUPLICATED, *HUB_BAD))
token_modes = st.sampled_from((GOOD, GOOD, GOOD, DUPLICATED, *TOKEN_BAD))
_ids = itertools.count(1)


def _v1(secret: str, webhook_id: str, stamp: str, body: bytes) -> str:
    encoded = secret.removeprefix("whsec_")
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(secret: str, body: bytes, mode: str, now: int) -> list[tuple[str, str]]:
    webhook_id, stamp, signed = f"msg_fuzz_{next(_ids)}", str(now), body
    stamps = {
        "stale": str(now - 400),
        "future": str(now + 400),
        "huge_timestamp": "999999999999",
        "far_timestamp": "253402300800",
        "negative_timestamp": "-1",
        "text_timestamp": "now",
        "float_timestamp": f"{now}.5",
        "empty_timestamp": "",
        "long_timestamp": "9" * 400,
    }
    stamp = stamps.get(mode, stamp)
    if mode == "long_id":
        webhook_id = "m" * 5000
    if mode == "other_body":
        signed = body + b"x"
    signature = _v1(
        "whsec_d3Jvbmctc2VjcmV0" if mode == "wrong_secret" else secret, webhook_id, stamp, signed
    )
    if mode == "v2_prefix":
        signature = "v2" + signature[2:]
    elif mode == "truncated":
        signature = signature[:-4]
    elif mode == "too_many":
        signature = " ".join([_v1("whsec_d3Jvbmc=", webhook_id, stamp, signed)] * 40 + [signature])
    elif mode == "not_base64":
        signature = "v1,***not base64***"
    headers: list[tuple[str, str]] = []
    if mode != "no_id":
        headers.append(("webhook-id", webhook_id))
    if mode != "no_timestamp":
        headers.append(("webhook-timestamp", stamp))
    if mode == DUPLICATED:
        headers.append(("webhook-signature", "v1,AAAA"))
    if mode != "no_signature":
        headers.append(("webhook-signature", signature))
    return headers


def hub_headers(body: bytes, mode: str, event: str) -> list[tuple[str, str]]:
    secret = "wrong-secret" if mode == "wrong_secret" else GITHUB_SECRET
    signed = body + b"x" if mode == "other_body" else body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    headers = [("X-GitHub-Event", event), ("User-Agent", "GitHub-Hookshot/fuzz")]
    if mode != "no_delivery":
        headers.append(("X-GitHub-Delivery", f"fuzz-{next(_ids)}"))
    if mode == DUPLICATED:
        headers.append(("X-Hub-Signature-256", "sha256=" + "0" * 64))
    if mode == "sha1_only":
        headers.append(
            ("X-Hub-Signature", "sha1=" + hmac.new(secret.encode(), body, "sha1").hexdigest())
        )
    elif mode == "not_hex":
        headers.append(("X-Hub-Signature-256", "sha256=zz" + digest[2:]))
    elif mode != "no_signature":
        headers.append(("X-Hub-Signature-256", f"sha256={digest}"))
    return headers


def token_headers(mode: str) -> list[tuple[str, str]]:
    values = {
        "wrong_token": "gl-wrong",
        "empty_token": "",
        "token_prefix": GITLAB_TOKEN[:-1],
    }
    if mode == "no_token":
        return []
    if mode == DUPLICATED:
        return [("X-Gitlab-Token", "gl-wrong"), ("X-Gitlab-Token", GITLAB_TOKEN)]
    return [("X-Gitlab-Token", values.get(mode, GITLAB_TOKEN))]
