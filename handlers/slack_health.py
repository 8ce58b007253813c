"""How Slack's Web API has been answering: failures counted by method and kind (for /metrics),
and whether Slack is degraded and since when (for /readyz).

Every Web API call goes through `handlers.slack_chat._call`, which reports its outcome here.
Degraded means: the last calls failed the way an outage does (unreachable, 5xx, 429) and
none has succeeded since the first of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bot.ports import Clock

CONNECTION = "connection"
SERVER_ERROR = "server_error"
RATE_LIMITED = "rate_limited"
API_ERROR = "api_error"
OUTAGE_KINDS = frozenset({CONNECTION, SERVER_ERROR, RATE_LIMITED})


def kind_of(error_code: str, status: int | None) -> str:
    """The kind of a failed call, from Slack's error code and the HTTP status."""
    if error_code == "transport_error":
        return CONNECTION
    if status == 429 or error_code == "ratelimited":
        return RATE_LIMITED
    if (status is not None and status >= 500) or error_code in {"fatal_error", "internal_error"}:
        return SERVER_ERROR
    return API_ERROR


class SlackHealth:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._failures: dict[tuple[str, str], int] = {}
        self._degraded_since: datetime | None = None
        self._last_kind: str | None = None

    def failed(self, method: str, kind: str) -> None:
        key = (method, kind)
        self._failures[key] = self._failures.get(key, 0) + 1
        if kind in OUTAGE_KINDS:
            self._last_kind = kind
            if self._degraded_since is None:
                self._degraded_since = self._clock.now()

    def succeeded(self) -> None:
        self._degraded_since = None
        self._last_kind = None

    @property
    def degraded_since(self) -> datetime | None:
        return self._degraded_since

    @property
    def last_kind(self) -> str | None:
        """The kind of the latest outage failure while degraded."""
        return self._last_kind

    def failure_counts(self) -> Mapping[tuple[str, str], int]:
        """Failed calls so far, by (method, kind)."""
        return dict(self._failures)
