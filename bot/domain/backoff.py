"""Retry timing for pipeline callbacks: capped exponential backoff with jitter, and when to give up.

Pure: the caller passes `now` and the random draw, so tests pin both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# 2**64 × any sane base is far beyond any cap; stopping the exponent here avoids float overflow.
_MAX_EXPONENT = 64


def ceiling(attempt: int, *, base: timedelta, cap: timedelta) -> timedelta:
    """The longest delay after failed attempt `attempt` (1-based): base·2^(attempt−1), capped."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if base <= timedelta(0) or cap < base:
        raise ValueError("backoff needs 0 < base <= cap")
    exponent = min(attempt - 1, _MAX_EXPONENT)
    seconds = min(cap.total_seconds(), base.total_seconds() * 2.0**exponent)
    return timedelta(seconds=seconds)


def next_attempt(
    attempt: int,
    now: datetime,
    *,
    jitter: float,
    base: timedelta = timedelta(seconds=5),
    cap: timedelta = timedelta(hours=1),
) -> datetime:
    """When to retry after failed attempt number `attempt` (1-based); `jitter` is a draw in [0, 1).

    "Equal jitter": the delay lies in [ceiling/2, ceiling). Full jitter ([0, ceiling)) can retry at
    once and hammer an endpoint that is down; decorrelated jitter needs the previous delay stored
    with the delivery. Half the ceiling as a floor keeps it stateless while still spreading the
    retries of many deliveries that failed together. For a given draw the delay never shrinks as
    attempts grow, and it never exceeds `cap`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    top = ceiling(attempt, base=base, cap=cap)
    return now + top / 2 + (top / 2) * jitter


def gives_up(first_attempt_at: datetime, now: datetime, window: timedelta) -> bool:
    """Whether the retry window that started with the first attempt has run out at `now`."""
    return now - first_attempt_at >= window
