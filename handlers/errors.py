"""JSON error bodies and correlation ids at the HTTP edge."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web


def correlation_id() -> str:
    return secrets.token_hex(6)


def json_error(
    status: int,
    message: str,
    *,
    fields: Sequence[Mapping[str, str]] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if fields is not None:
        body["fields"] = list(fields)
    body.update(extra)
    return web.json_response(body, status=status)
