"""Constant-time checks of shared webhook secrets with several values for rotation: GitHub's
`X-Hub-Signature-256` HMAC and GitLab's `X-Gitlab-Token` (the pattern of Prow's pkg/github/hmac.go).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from bot.pipelines.base import SignatureError

__all__ = ["HubSignatureVerifier", "TokenVerifier", "split_secrets"]

_SHA256_PREFIX = "sha256="
_MAX_HEADER = 1024  # a longer header is not a signature: refuse before hashing anything


def split_secrets(value: SecretStr | str | None) -> list[str]:
    """A settings value of space-separated secrets (rotation: old and new side by side)."""
    if value is None:
        return []
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return raw.split()


def _encoded(secrets: Sequence[str]) -> tuple[bytes, ...]:
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets (use split_secrets)")
    if not secrets or any(not s for s in secrets):
        raise ValueError("at least one non-empty secret is required")
    return tuple(s.encode() for s in secrets)


class HubSignatureVerifier:
    """GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, checked against
    every configured secret in constant time (no early exit that would say which one was close)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.__keys = _encoded(secrets)

    def __repr__(self) -> str:
        return f"HubSignatureVerifier(secrets=<{len(self.__keys)} redacted>)"

    def verify(self, body: bytes, header: str | None) -> None:
        """Return when `header` signs `body` with one of the secrets; raise SignatureError."""
        if not header:
            raise SignatureError("missing header X-Hub-Signature-256")
        header = header.strip()
        if len(header) > _MAX_HEADER or not header.startswith(_SHA256_PREFIX):
            raise SignatureError("X-Hub-Signature-256 is not 'sha256=<hex>'")
        # (headers are decoded with surrogateescape: non-UTF-8 bytes come back as bytes)
        offered = header[len(_SHA256_PREFIX) :].lower().encode("utf-8", "surrogateescape")
        matched = False
        for key in self.__keys:
            expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
            matched |= hmac.compare_digest(expected, offered)
        if not matched:
            raise SignatureError("no matching signature")


class TokenVerifier:
    """A shared token sent as a header (GitLab's `X-Gitlab-Token`), compared in constant time
    against each configured token."""

    def __init__(self, tokens: Sequence[str], *, header: str) -> None:
        self.__tokens = _encoded(tokens)
        self._header = header

    def __repr__(self) -> str:
        return f"TokenVerifier(header={self._header!r}, tokens=<{len(self.__tokens)} redacted>)"

    def verify(self, offered: str | None) -> None:
        if not offered:
            raise SignatureError(f"missing header {self._header}")
        if len(offered) > _MAX_HEADER:
            raise SignatureError(f"{self._header} does not match")
        candidate = offered.encode("utf-8", "surrogateescape")
        matched = False
        for token in self.__tokens:
            # Hash both sides so the comparison takes the same time whatever the lengths.
            matched |= hmac.compare_digest(
                hashlib.sha256(token).digest(), hashlib.sha256(candidate).digest()
            )
        if not matched:
            raise SignatureError(f"{self._header} does not match")
