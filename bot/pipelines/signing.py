"""Standard Webhooks signing and verification (https://www.standardwebhooks.com/) with several
secrets for rotation, an injected clock and constant-time comparison."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from math import floor

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from bot.pipelines.base import SignatureError

__all__ = [
    "SecretLike",
    "StandardWebhookSigner",
    "StandardWebhookVerifier",
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
        timestamp = int(timestamp_header)
        now = self._clock()
        skew = abs(now - datetime.fromtimestamp(timestamp, tz=UTC))
        if skew > self._tolerance:
            raise SignatureError(
                f"webhook-timestamp is outside the allowed ±{_seconds(self._tolerance)} s window"
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("body is not UTF-8") from None

        offered = _offered_signatures(signature_header)
        if not offered:
            raise SignatureError("webhook-signature has no well-formed v1 signature")
        for webhook in self.__webhooks:
            expected = base64.b64decode(_sign(webhook, webhook_id, timestamp, text)[3:])
            # Compare every offered signature: the time taken does not say which one was close.
            matched = False
            for candidate in offered:
                matched |= hmac.compare_digest(expected, candidate)
            if matched:
                return webhook_id
        raise SignatureError("no matching signature")


def _offered_signatures(header: str) -> list[bytes]:
    """The decoded `v1` signatures of a header; malformed or other-version entries are skipped."""
    signatures: list[bytes] = []
    for entry in header.split()[:_MAX_SIGNATURES]:
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            signatures.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return signatures


def _seconds(delta: timedelta) -> int:
    return floor(delta.total_seconds())


class StandardWebhookSigner:
    """Signs outbound webhooks. With several secrets (rotation) it sends one signature per
    secret, so a receiver holding either the old or the new secret accepts the message."""

    def __init__(self, secret: SecretLike, *more: SecretLike) -> None:
        self.__webhooks = tuple(_webhook(s, i) for i, s in enumerate((secret, *more), start=1))

    def __repr__(self) -> str:
        return f"StandardWebhookSigner(secrets=<{len(self.__webhooks)} redacted>)"

    def sign(self, webhook_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for `body` sent at `timestamp` (aware)."""
        if timestamp.tzinfo is None:
            raise ValueError("naive timestamp; pass a timezone-aware UTC datetime")
        seconds = floor(timestamp.timestamp())
        text = body.decode("utf-8")
        signatures = " ".join(_sign(w, webhook_id, seconds, text) for w in self.__webhooks)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(seconds),
            "webhook-signature": signatures,
        }
