"""Standard Webhooks signing and verification (https://www.standardwebhooks.com/) with several
secrets for rotation, an injected clock and constant-time comparison."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import floor
from typing import Protocol

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from bot.pipelines.base import SignatureError

__all__ = [
    "CombinedSigner",
    "SecretLike",
    "SignatureScheme",
    "SignedMessage",
    "StandardWebhookSigner",
    "StandardWebhookVerifier",
    "WebhookSigner",
    "check_headers",
    "offered_signatures",
    "parse_secrets",
]

SecretLike = SecretStr | str

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # whole seconds; 12 digits keep datetime in range
_MAX_WEBHOOK_ID = 256  # the id is stored as a dedupe key
_MAX_SIGNATURES = 16  # a header with more entries than this is not a rotation, it is an attack


def parse_secrets(value: str) -> list[str]:
    """Split a settings value of space-separated `whsec_<base64>` secrets, validating each.

    Errors name the secret by position only, never by value."""
    parts = value.split()
    if not parts:
        raise ValueError("expected at least one 'whsec_<base64>' secret")
    for position, part in enumerate(parts, start=1):
        _key_bytes(part, position)
    return parts


def _key_bytes(secret: str, position: int = 1) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"secret #{position} does not start with '{SECRET_PREFIX}'")
    encoded = secret[len(SECRET_PREFIX) :]
    if not _BASE64.fullmatch(encoded):
        raise ValueError(f"secret #{position} is not base64 after '{SECRET_PREFIX}'")
    try:
        # Unpadded secrets are common (the library pads them too).
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"secret #{position} is not base64 after '{SECRET_PREFIX}'") from None
    if not key:
        raise ValueError(f"secret #{position} is empty")
    return key


def _webhook(secret: SecretLike, position: int) -> Webhook:
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    # Validate here (the library would accept garbage and decode it leniently); from bytes so
    # that the library does not decode a second time.
    return Webhook(_key_bytes(raw, position))


def _sign(webhook: Webhook, webhook_id: str, timestamp: int, body: str) -> str:
    # Webhook.sign replaces tzinfo rather than converting, so hand it a UTC datetime.
    return str(webhook.sign(webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body))


class StandardWebhookVerifier:
    """Checks `webhook-id`, `webhook-timestamp` and `webhook-signature` against any of several
    secrets. Unlike `Webhook.verify` it reads time from the injected clock and never raises
    anything but SignatureError for bad input."""

    def __init__(
        self,
        secrets: Sequence[SecretLike],
        *,
        clock: Callable[[], datetime],
        tolerance: timedelta = timedelta(minutes=5),
    ) -> None:
        if isinstance(secrets, str | SecretStr):
            raise TypeError("secrets must be a sequence of secrets (use parse_secrets)")
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self.__webhooks = tuple(_webhook(s, i) for i, s in enumerate(secrets, start=1))
        self._clock = clock
        self._tolerance = tolerance

    def __repr__(self) -> str:
        return (
            f"StandardWebhookVerifier(secrets=<{len(self.__webhooks)} redacted>, "
            f"tolerance={self._tolerance!r})"
        )

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the verified `webhook-id`; raise SignatureError saying what is wrong."""
        signed = check_headers(body, headers, now=self._clock(), tolerance=self._tolerance)
        offered = offered_signatures(signed.signature_header, "v1")
        if not offered:
            raise SignatureError("webhook-signature has no well-formed v1 signature")
        text = signed.body.decode("utf-8")
        for webhook in self.__webhooks:
            expected = base64.b64decode(
                _sign(webhook, signed.webhook_id, signed.timestamp, text)[3:]
            )
            # Compare every offered signature: the time taken does not say which one was close.
            matched = False
            for candidate in offered:
                matched |= hmac.compare_digest(expected, candidate)
            if matched:
                return signed.webhook_id
        raise SignatureError("no matching signature")


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """The parts of a webhook whose headers are well-formed and whose timestamp is fresh."""

    webhook_id: str
    timestamp: int
    body: bytes  # UTF-8
    signature_header: str

    @property
    def content(self) -> bytes:
        """What is signed: `{webhook-id}.{webhook-timestamp}.{body}`."""
        return f"{self.webhook_id}.{self.timestamp}.".encode() + self.body


def check_headers(
    body: bytes, headers: Mapping[str, str], *, now: datetime, tolerance: timedelta
) -> SignedMessage:
    """Check everything but the signature itself; raise SignatureError for bad input only.

    The timestamp is compared as an integer with the window before anything converts it to a
    datetime: a year past 9999 (`253402300800`) is stale, not an overflow."""
    lowered = {key.lower(): value for key, value in headers.items()}
    webhook_id = lowered.get("webhook-id", "").strip()
    timestamp_header = lowered.get("webhook-timestamp", "").strip()
    signature_header = lowered.get("webhook-signature", "").strip()
    missing = [
        name
        for name, value in (
            ("webhook-id", webhook_id),
            ("webhook-timestamp", timestamp_header),
            ("webhook-signature", signature_header),
        )
        if not value
    ]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if len(webhook_id) > _MAX_WEBHOOK_ID or not webhook_id.isprintable():
        raise SignatureError("webhook-id is too long or not printable")
    if not _TIMESTAMP.fullmatch(timestamp_header):
        raise SignatureError("webhook-timestamp is not an integer number of seconds")
    timestamp = int(timestamp_header)  # at most 12 ASCII digits
    if abs(timestamp - floor(now.timestamp())) > _seconds(tolerance):
        raise SignatureError(
            f"webhook-timestamp is outside the allowed ±{_seconds(tolerance)} s window"
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    return SignedMessage(webhook_id, timestamp, body, signature_header)


def offered_signatures(header: str, version: str) -> list[bytes]:
    """The decoded signatures of `version` (`v1`, `v1a`) in a header; malformed or other-version
    entries are skipped."""
    signatures: list[bytes] = []
    for entry in header.split()[:_MAX_SIGNATURES]:
        offered, comma, encoded = entry.partition(",")
        if offered != version or not comma:
            continue
        try:
            signatures.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return signatures


def _seconds(delta: timedelta) -> int:
    return floor(delta.total_seconds())


class SignatureScheme(Protocol):
    """One way of signing (`v1` HMAC, `v1a` Ed25519): the header entries for a message."""

    def signatures(self, webhook_id: str, seconds: int, body: bytes) -> list[str]: ...


class WebhookSigner(Protocol):
    """What signs an outbound webhook: the three Standard Webhooks headers."""

    def sign(self, webhook_id: str, timestamp: datetime, body: bytes) -> dict[str, str]: ...


def _headers(
    schemes: Sequence[SignatureScheme], webhook_id: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    if timestamp.tzinfo is None:
        raise ValueError("naive timestamp; pass a timezone-aware UTC datetime")
    seconds = floor(timestamp.timestamp())
    entries = [
        entry for scheme in schemes for entry in scheme.signatures(webhook_id, seconds, body)
    ]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(entries),
    }


class CombinedSigner:
    """Signs with several schemes at once (e.g. `v1a` and `v1` while receivers move from a
    shared callback secret to the public key): one header entry per scheme and key."""

    def __init__(self, scheme: SignatureScheme, *more: SignatureScheme) -> None:
        self._schemes = (scheme, *more)

    def __repr__(self) -> str:
        return f"CombinedSigner({', '.join(repr(s) for s in self._schemes)})"

    def sign(self, webhook_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for `body` sent at `timestamp` (aware)."""
        return _headers(self._schemes, webhook_id, timestamp, body)


class StandardWebhookSigner:
    """Signs outbound webhooks. With several secrets (rotation) it sends one signature per
    secret, so a receiver holding either the old or the new secret accepts the message."""

    def __init__(self, secret: SecretLike, *more: SecretLike) -> None:
        self.__webhooks = tuple(_webhook(s, i) for i, s in enumerate((secret, *more), start=1))

    def __repr__(self) -> str:
        return f"StandardWebhookSigner(secrets=<{len(self.__webhooks)} redacted>)"

    def signatures(self, webhook_id: str, seconds: int, body: bytes) -> list[str]:
        """The `v1,…` entries for `body` sent at `seconds`, one per secret."""
        text = body.decode("utf-8")
        return [_sign(w, webhook_id, seconds, text) for w in self.__webhooks]

    def sign(self, webhook_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for `body` sent at `timestamp` (aware)."""
        return _headers((self,), webhook_id, timestamp, body)
