"""Ed25519 callback signing keys: Standard Webhooks `v1a` signatures over
`{webhook-id}.{webhook-timestamp}.{body}`, so that a receiver verifies Quorum's decisions with a
public key and nobody who can only *ask* for a deploy can forge one.

The key file (`QUORUM_CALLBACK_SIGNING_KEY_FILE`, written by `quorum keys generate`) is text:

    # comment lines and blank lines are ignored
    created: 2026-12-03T14:12:03Z
    secret_key: whsk_<base64 of the 32-byte Ed25519 seed + its 32-byte public key>

(A `secret_key` of the 32-byte seed alone is accepted too.)
The public key is published as `whpk_<base64 of the 32 raw public key bytes>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bot.pipelines.base import SignatureError
from bot.pipelines.signing import (
    CombinedSigner,
    SignatureScheme,
    StandardWebhookSigner,
    WebhookSigner,
    check_headers,
    offered_signatures,
)

__all__ = [
    "ALGORITHM",
    "CallbackKey",
    "CallbackKeyError",
    "CallbackSigning",
    "Ed25519Signer",
    "Ed25519Verifier",
    "PublicKeyInfo",
    "callback_signing",
    "public_key_bytes",
]

ALGORITHM: Final = "ed25519"
VERSION: Final = "v1a"
SECRET_KEY_PREFIX: Final = "whsk_"  # noqa: S105 - the format marker, not a secret
PUBLIC_KEY_PREFIX: Final = "whpk_"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_MAX_KEY_FILE_BYTES = 4096


class CallbackKeyError(ValueError):
    """A key file that cannot be used; the message names the file and the problem, never the key."""


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    """What `GET /api/v1/keys` and `quorum keys` show of a key."""

    key_id: str
    public_key: str  # whpk_…
    created: datetime
    algorithm: str = ALGORITHM
    signature_version: str = VERSION


def _b64(value: str, prefix: str, what: str) -> bytes:
    if not value.startswith(prefix):
        raise ValueError(f"{what} does not start with '{prefix}'")
    encoded = value[len(prefix) :]
    if not _BASE64.fullmatch(encoded):
        raise ValueError(f"{what} is not base64 after '{prefix}'")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64 after '{prefix}'") from None


def public_key_bytes(public_key: str) -> bytes:
    """The 32 raw bytes of a `whpk_…` public key; ValueError if it is not one."""
    raw = _b64(public_key.strip(), PUBLIC_KEY_PREFIX, "public key")
    if len(raw) != 32:
        raise ValueError("public key is not 32 bytes after 'whpk_'")
    return raw


class CallbackKey:
    """An Ed25519 private key with the time it was created. Its repr never shows the key."""

    def __init__(self, private: Ed25519PrivateKey, created: datetime) -> None:
        if created.tzinfo is None:
            raise ValueError("naive created time; pass a timezone-aware UTC datetime")
        self.__private = private
        self.created = created.astimezone(UTC).replace(microsecond=0)
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._public_raw = raw
        self.public = PublicKeyInfo(
            key_id=f"qck_{hashlib.sha256(raw).hexdigest()[:16]}",
            public_key=PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode(),
            created=self.created,
        )

    def __repr__(self) -> str:
        return f"CallbackKey(key_id={self.public.key_id!r}, private=<redacted>)"

    @classmethod
    def generate(cls, now: datetime) -> CallbackKey:
        return cls(Ed25519PrivateKey.generate(), now)

    @classmethod
    def from_secret(cls, secret_key: str, created: datetime) -> CallbackKey:
        """From `whsk_<base64>`: the 32-byte seed, or seed + public key (64 bytes, libsodium's
        form; the public half must match the seed)."""
        raw = _b64(secret_key.strip(), SECRET_KEY_PREFIX, "secret_key")
        if len(raw) not in (32, 64):
            raise ValueError("secret_key is neither 32 nor 64 bytes after 'whsk_'")
        key = cls(Ed25519PrivateKey.from_private_bytes(raw[:32]), created)
        if len(raw) == 64 and raw[32:] != key._public_raw:
            raise ValueError("secret_key's public half does not match its seed")
        return key

    @classmethod
    def parse(cls, text: str) -> CallbackKey:
        """Read the key file format (module docstring); ValueError names the problem."""
        fields: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            name, colon, value = stripped.partition(":")
            name = name.strip().lower()
            if not colon or name not in ("created", "secret_key"):
                raise ValueError(f"line {number} is not 'created: …' or 'secret_key: …'")
            if name in fields:
                raise ValueError(f"line {number} repeats '{name}'")
            fields[name] = value.strip()
        if "secret_key" not in fields:
            raise ValueError("no 'secret_key: whsk_…' line")
        if "created" not in fields:
            raise ValueError("no 'created: <ISO-8601 UTC time>' line")
        try:
            created = datetime.fromisoformat(fields["created"])
        except ValueError:
            raise ValueError("'created' is not an ISO-8601 time") from None
        if created.tzinfo is None:
            raise ValueError("'created' has no time zone (write it with a Z)")
        return cls.from_secret(fields["secret_key"], created)

    @classmethod
    def from_file(cls, path: Path) -> CallbackKey:
        try:
            with path.open("rb") as handle:
                raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise CallbackKeyError(f"{path}: cannot be read ({exc.strerror or 'error'})") from None
        if len(raw) > _MAX_KEY_FILE_BYTES:
            raise CallbackKeyError(f"{path}: larger than a key file ({_MAX_KEY_FILE_BYTES} bytes)")
        try:
            return cls.parse(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise CallbackKeyError(f"{path}: not UTF-8 text") from None
        except ValueError as exc:
            raise CallbackKeyError(f"{path}: {exc}") from None

    def serialize(self) -> str:
        """The key file's text."""
        seed = self.__private.private_bytes_raw()
        secret = SECRET_KEY_PREFIX + base64.b64encode(seed + self._public_raw).decode()
        return (
            "# Quorum callback signing key (Ed25519, Standard Webhooks v1a). Keep it secret.\n"
            f"# public key {self.public.key_id}: {self.public.public_key}\n"
            f"created: {self.created.isoformat().replace('+00:00', 'Z')}\n"
            f"secret_key: {secret}\n"
        )

    def write(self, path: Path) -> None:
        """Create `path` with mode 0600; refuses to replace an existing file."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.serialize())

    def sign_content(self, content: bytes) -> bytes:
        return self.__private.sign(content)


class Ed25519Signer:
    """The `v1a,…` entry of a webhook's signature header (a `SignatureScheme`)."""

    def __init__(self, key: CallbackKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"Ed25519Signer({self._key!r})"

    @property
    def key(self) -> PublicKeyInfo:
        return self._key.public

    def signatures(self, webhook_id: str, seconds: int, body: bytes) -> list[str]:
        content = f"{webhook_id}.{seconds}.".encode() + body
        return [f"{VERSION}," + base64.b64encode(self._key.sign_content(content)).decode()]

    def sign(self, webhook_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        return CombinedSigner(self).sign(webhook_id, timestamp, body)


class Ed25519Verifier:
    """Checks `v1a` signatures against trusted `whpk_` public keys (what a receiver does; the
    tests use it as one). Raises only SignatureError for bad input."""

    def __init__(
        self,
        public_keys: Sequence[str],
        *,
        clock: Callable[[], datetime],
        tolerance: timedelta = timedelta(minutes=5),
    ) -> None:
        if isinstance(public_keys, str) or not public_keys:
            raise ValueError("at least one 'whpk_…' public key is required (a sequence)")
        self._keys = tuple(
            Ed25519PublicKey.from_public_bytes(public_key_bytes(k)) for k in public_keys
        )
        self._clock = clock
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the verified `webhook-id`; raise SignatureError saying what is wrong."""
        signed = check_headers(body, headers, now=self._clock(), tolerance=self._tolerance)
        offered = [s for s in offered_signatures(signed.signature_header, VERSION) if len(s) == 64]
        if not offered:
            raise SignatureError("webhook-signature has no well-formed v1a signature")
        for key in self._keys:
            for signature in offered:
                try:
                    key.verify(signature, signed.content)
                except InvalidSignature:
                    continue
                return signed.webhook_id
        raise SignatureError("no matching signature")


@dataclass(frozen=True, slots=True)
class CallbackSigning:
    """How callbacks are signed: the signer (None: not configured, callbacks fail permanently
    rather than go out unsigned) and the public keys to publish."""

    signer: WebhookSigner | None
    keys: tuple[PublicKeyInfo, ...]
    ephemeral: bool = False


def callback_signing(
    *, key_file: Path | None, secrets: Sequence[str], ephemeral: bool, now: datetime
) -> CallbackSigning:
    """The key file's `v1a` and the callback secrets' `v1` signatures, together (so receivers
    can move from the secret to the public key); or an ephemeral key (local development).
    Raises CallbackKeyError for a key file that cannot be used."""
    schemes: list[SignatureScheme] = []
    keys: list[PublicKeyInfo] = []
    if key_file is not None or ephemeral:
        key = CallbackKey.from_file(key_file) if key_file is not None else CallbackKey.generate(now)
        schemes.append(Ed25519Signer(key))
        keys.append(key.public)
    if secrets:
        schemes.append(StandardWebhookSigner(*secrets))
    signer = CombinedSigner(*schemes) if schemes else None
    return CallbackSigning(signer, tuple(keys), ephemeral=ephemeral and key_file is None)
