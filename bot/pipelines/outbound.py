"""Outbound HTTP for the provider adapters: one attempt, never raising for network or HTTP
failures, classified into a `DeliveryResult` (2xx ok, 5xx/408/425/429/network retry, other 4xx
permanent with the provider's own message).

A receiver a webhook named (`callback_url`) is described by `callback_result` instead: its
status code and a fixed message, never its body. Connection errors name the host the URL
named and the kind of failure, never the addresses tried (`connect_failure`)."""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from bot.pipelines.egress import EgressRefused
from bot.ports import DeliveryResult

__all__ = [
    "NOT_RETRIED",
    "Reply",
    "callback_result",
    "connect_failure",
    "failure",
    "provider_message",
    "result_for",
    "send",
]

_RETRYABLE: Final = frozenset({408, 425, 429})
_EXCERPT_BYTES: Final = 4096
MESSAGE_CHARS: Final = 300
NOT_RETRIED: Final = "permanent, not retried"
_UNREACHABLE: Final = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    text: str  # the start of the body, enough for an error message
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    client_timeout: aiohttp.ClientTimeout,
    cookies: Mapping[str, str] | None = None,
) -> Reply | DeliveryResult:
    """One request. A `DeliveryResult` comes back only for failures before any HTTP status."""
    try:
        async with session.request(
            method,
            url,
            data=body,
            headers=dict(headers),
            timeout=client_timeout,
            cookies=dict(cookies) if cookies else None,
            allow_redirects=False,
        ) as response:
            try:
                raw = await response.content.read(_EXCERPT_BYTES)
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            return Reply(
                status=response.status,
                text=raw.decode("utf-8", errors="replace"),
                headers={k.lower(): v for k, v in response.headers.items()},
                cookies={name: morsel.value for name, morsel in response.cookies.items()},
            )
    except TimeoutError:
        return DeliveryResult(ok=False, detail=f"timed out after {client_timeout.total:g} s")
    except aiohttp.InvalidURL:
        return DeliveryResult(ok=False, detail="invalid URL", permanent=True)
    except aiohttp.ClientConnectorError as exc:
        return connect_failure(exc)
    except aiohttp.ClientError as exc:
        # The exception text may quote a URL carrying a token: name the kind only.
        return DeliveryResult(ok=False, detail=f"network error: {type(exc).__name__}")


def provider_message(text: str) -> str:
    """The provider's error message: `message` / `error` of a JSON body, else the text itself,
    on one line and bounded."""
    message: Any = None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        message = data.get("message") or data.get("error") or data.get("errors")
    if message is None:
        message = text
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def failure(reply: Reply, prefix: str = "") -> DeliveryResult:
    """A non-2xx reply: retry on 5xx and throttling, otherwise stop and say why."""
    message = provider_message(reply.text)
    detail = f"{prefix}HTTP {reply.status}" + (f": {message}" if message else "")
    retryable = reply.status >= 500 or reply.status in _RETRYABLE
    return DeliveryResult(ok=False, detail=detail, permanent=not retryable)


def result_for(reply: Reply | DeliveryResult, ok_detail: str = "") -> DeliveryResult:
    if isinstance(reply, DeliveryResult):
        return reply
    if 200 <= reply.status < 300:
        return DeliveryResult(ok=True, detail=ok_detail or f"HTTP {reply.status}")
    return failure(reply)


def connect_failure(exc: aiohttp.ClientConnectorError) -> DeliveryResult:
    """A connection that failed before any HTTP status, in fixed words: the host the URL named
    and the kind of failure. The OS error's own text is not used (it lists the addresses tried).
    A refusal by the egress policy is permanent; the rest are retried."""
    host = exc.host
    if isinstance(exc.os_error, EgressRefused):
        return DeliveryResult(
            ok=False,
            detail=f"refused by the egress policy at connect time: {exc.os_error.reason} "
            f"({NOT_RETRIED})",
            permanent=True,
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return DeliveryResult(ok=False, detail=f"DNS lookup failed for {host}")
    if isinstance(exc, aiohttp.ClientSSLError):
        return DeliveryResult(ok=False, detail=f"TLS error connecting to {host}")
    os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        reason = "connection refused"
    elif isinstance(os_error, TimeoutError) or os_error.errno == errno.ETIMEDOUT:
        reason = "connection timed out"
    elif os_error.errno in _UNREACHABLE:
        reason = "network unreachable"
    elif isinstance(os_error, ConnectionResetError):
        reason = "connection reset"
    else:
        reason = "connection failed"
    return DeliveryResult(ok=False, detail=f"cannot connect to {host}: {reason}")


def callback_result(status: int) -> DeliveryResult:
    """A webhook-named receiver's answer, by its status code alone: the body is never read, so
    nothing a receiver (or an internal service posing as one) says reaches the card, the status
    API or the audit trail."""
    if 200 <= status < 300:
        return DeliveryResult(ok=True, detail=f"HTTP {status}")
    if 300 <= status < 400:
        return DeliveryResult(
            ok=False,
            detail=f"receiver answered with a redirect (HTTP {status}); Quorum does not "
            f"follow redirects ({NOT_RETRIED})",
            permanent=True,
        )
    if status == 429:
        return DeliveryResult(ok=False, detail=f"receiver asked to slow down (HTTP {status})")
    if status in _RETRYABLE or status >= 500:
        return DeliveryResult(ok=False, detail=f"receiver is unavailable (HTTP {status})")
    return DeliveryResult(
        ok=False,
        detail=f"receiver refused the callback (HTTP {status}) ({NOT_RETRIED})",
        permanent=True,
    )
