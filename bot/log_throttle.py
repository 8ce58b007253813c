"""Repeated failures of one kind as one log line per window: a count and the next retry time.

A sweep that fails every few seconds while Slack is down would otherwise log a traceback per
attempt. `FailureLog.failed` logs the first failure of a kind at once (one line, no traceback),
then at most one summary line per window, the window doubling up to `cap`; `succeeded` logs
one line when a failing kind recovers. Kinds are per "what" (e.g. "card sync") and per failure
(e.g. "Slack chat.postMessage failed: transport_error"). `retry_at` gives the sweeps that want
it a backoff of their own: no new attempt before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.backoff import ceiling

FIRST_WINDOW = timedelta(seconds=10)
WINDOW_CAP = timedelta(minutes=10)
RETRY_BASE = timedelta(seconds=1)
RETRY_CAP = timedelta(seconds=60)


def is_slack_error(exc: BaseException) -> bool:
    return isinstance(getattr(exc, "method", None), str) and isinstance(
        getattr(exc, "error_code", None), str
    )


def failure_kind(exc: BaseException) -> str:
    """What failed, safe to log: a Slack error's own message (method and error code, never the
    token), otherwise the exception's type only (a driver's message may carry values)."""
    return str(exc) if is_slack_error(exc) else type(exc).__name__


def is_outage(exc: BaseException) -> bool:
    """A failure worth backing off from (Slack unreachable, 5xx, rate limited), as opposed to
    an answer about one object (a channel gone, a user not found)."""
    return getattr(exc, "retryable", False) is True


@dataclass(slots=True)
class _Streak:
    since: datetime
    total: int
    unlogged: int
    next_line_at: datetime
    window: timedelta


@dataclass(slots=True)
class _Gate:
    failures: int
    retry_at: datetime


class FailureLog:
    """One per process (`Deps.failures`); not thread-safe (the event loop's only)."""

    def __init__(
        self,
        *,
        first_window: timedelta = FIRST_WINDOW,
        window_cap: timedelta = WINDOW_CAP,
        retry_base: timedelta = RETRY_BASE,
        retry_cap: timedelta = RETRY_CAP,
    ) -> None:
        self._first_window = first_window
        self._window_cap = window_cap
        self._retry_base = min(retry_base, retry_cap)
        self._retry_cap = retry_cap
        self._streaks: dict[tuple[str, str], _Streak] = {}
        self._gates: dict[str, _Gate] = {}

    def failed(
        self,
        logger: logging.Logger,
        what: str,
        exc: BaseException,
        now: datetime,
        *,
        retry_at: datetime | None = None,
        backoff: bool = False,
    ) -> datetime | None:
        """Count a failure of `what`; log a line if this kind's window allows. `retry_at`: when
        the caller retries (logged); `backoff`: the caller backs off through `ready` instead,
        and the retry time is computed here (outages only). Returns the retry time, if any."""
        if backoff and is_outage(exc):
            gate = self._gates.get(what)
            failures = 1 if gate is None else gate.failures + 1
            retry_at = now + ceiling(failures, base=self._retry_base, cap=self._retry_cap)
            self._gates[what] = _Gate(failures, retry_at)
        kind = failure_kind(exc)
        key = (what, kind)
        retry = f"next retry at {retry_at.isoformat(timespec='seconds')}" if retry_at else ""
        streak = self._streaks.get(key)
        if streak is None:
            self._streaks[key] = _Streak(now, 1, 0, now + self._first_window, self._first_window)
            logger.warning(
                "%s failed: %s (1 failure%s)",
                what,
                kind,
                f"; {retry}" if retry else "",
                # Anything but a Slack answer may be a bug: its traceback, once per streak.
                exc_info=None if is_slack_error(exc) else exc,
            )
            return retry_at
        streak.total += 1
        streak.unlogged += 1
        if now >= streak.next_line_at:
            logger.warning(
                "%s still failing: %s (%d failures since %s, %d since the last line%s)",
                what,
                kind,
                streak.total,
                streak.since.isoformat(timespec="seconds"),
                streak.unlogged,
                f"; {retry}" if retry else "",
            )
            streak.unlogged = 0
            streak.window = min(streak.window * 2, self._window_cap)
            streak.next_line_at = now + streak.window
        return retry_at

    def succeeded(self, logger: logging.Logger, what: str, now: datetime) -> None:
        """`what` worked: its failures (of any kind) are over, and its backoff with them."""
        self._gates.pop(what, None)
        ended = [key for key in self._streaks if key[0] == what]
        for key in ended:
            streak = self._streaks.pop(key)
            logger.info(
                "%s recovered: %s stopped after %d failures since %s",
                what,
                key[1],
                streak.total,
                streak.since.isoformat(timespec="seconds"),
            )

    def ready(self, what: str, now: datetime) -> bool:
        """Whether `what` may be tried now (no backoff, or its retry time has come)."""
        gate = self._gates.get(what)
        return gate is None or now >= gate.retry_at

    def failing(self, what: str) -> bool:
        return any(key[0] == what for key in self._streaks)
