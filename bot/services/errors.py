"""Errors a use case reports to its caller, each with the HTTP status the edge should answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    status: int = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, Any] = details


class Unprocessable(ServiceError):
    """Well-formed, but the policy cannot take it (unknown environment, missing ticket, …)."""

    status = 422


class Conflict(ServiceError):
    """A replayed delivery id with a different body."""

    status = 409


class NotFound(ServiceError):
    status = 404
