"""Pacing of Slack calls that follow votes: Slack allows about one message per second per
channel and a few dozen message updates per minute, so a burst of votes must not become a burst
of API calls. What is not sent yet stays due in the database for a later sweep.

Pacing is about real elapsed time, so it reads a monotonic clock, not the domain clock (which
tests hold still).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Monotonic = Callable[[], float]


@dataclass(slots=True)
class TokenBuckets:
    """One token bucket per key (a channel): `rate` tokens per second, at most `burst`."""

    rate: float
    burst: float
    clock: Monotonic = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


@dataclass(slots=True)
class CardThrottle:
    """A pending card is updated at most once per `interval` seconds; posts and decisions
    never wait."""

    interval: float = 1.0
    clock: Monotonic = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)

    def due(self, request_id: str, *, urgent: bool) -> bool:
        last = self._last.get(request_id)
        return urgent or last is None or self.clock() - last >= self.interval

    def last_update(self, request_id: str) -> float:
        """When the card was last updated (-inf: not in memory), to serve the longest-waiting
        cards first when not all can be updated."""
        return self._last.get(request_id, float("-inf"))

    def waiting(self) -> frozenset[str]:
        """Requests whose pending card was updated less than `interval` ago."""
        now = self.clock()
        return frozenset(rid for rid, at in self._last.items() if now - at < self.interval)

    def updated(self, request_id: str) -> None:
        if len(self._last) > 10_000:  # forget old entries; a forgotten card is simply due
            self._last.clear()
        self._last[request_id] = self.clock()


CARD_UPDATES = "chat.update"  # the key of the workspace-wide budget in `SlackPacing.updates`


@dataclass(slots=True)
class SlackPacing:
    replies: TokenBuckets = field(default_factory=lambda: TokenBuckets(rate=1.0, burst=5.0))
    cards: CardThrottle = field(default_factory=CardThrottle)
    # chat.update is a Tier 3 method: about 50 calls a minute per workspace. Updates of pending
    # cards share this budget (a burst of 20, then one a second); new cards and decisions do not
    # wait for it, so under a storm of votes the cards that matter most go first.
    updates: TokenBuckets = field(default_factory=lambda: TokenBuckets(rate=1.0, burst=20.0))
