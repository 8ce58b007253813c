"""Replays of signed Slack requests are answered, not re-executed.

Slack signs `v0:<timestamp>:<body>`; a captured request stays valid for the 5-minute window, so
anyone who sees one could send it again. Every signed request is therefore *taken* before a
listener runs: its key (a digest of signature and timestamp) is inserted into `slack_replays`
(unique key, insert first), and only the process whose insert won acts. Its answer (status and
body) is stored afterwards; a later copy gets that answer back and nothing runs again, on any
replica and after a restart.

A concurrent duplicate (both copies in flight at once): in one process the second waits for the
first's answer (at most `wait` seconds); across processes it polls the stored answer as long.
If the first has still not answered by then (or never will: it crashed after taking the key),
the duplicate is answered `BUSY` (409) and does nothing.

Cheap on the hot path: keys taken at the same time share one short transaction (the batch
waits while each turn of the loop adds claims, at most 4 turns), which also stores the answers
given since the previous one; answers with no claims to ride along wait `ANSWER_DELAY`. So a
burst of clicks costs one write for all of their claims and answers, and a replay seen by the
same process is answered from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

from bot.ports import Clock, Database, SlackAnswer

log = logging.getLogger(__name__)

# Slack accepts a timestamp up to 5 minutes either side of now, so a request received now can
# verify until 10 minutes from now; kept past that with a margin for clock skew.
REPLAY_RETENTION: Final = timedelta(minutes=15)
# Answers are stored with the next claims (one transaction for both) or, if none come, after
# this many seconds; a replay meanwhile is answered from memory (or, on another replica, waits).
ANSWER_DELAY: Final = 0.25
_JOIN_TURNS = 4  # turns of the loop a batch of claims waits while each turn adds claims


class Busy(Enum):
    """The request was taken by a copy that has not answered (yet)."""

    BUSY = "busy"


BUSY: Final = Busy.BUSY


def replay_key(timestamp: str, signature: str) -> str:
    """The stored key of a signed request: sha256 over timestamp and signature."""
    return hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()


class SlackReplays:
    """Takes signed Slack requests once (see the module docstring)."""

    def __init__(self, database: Database, clock: Clock, *, wait: float = 3.0) -> None:
        self._database = database
        self._clock = clock
        self._wait = wait
        self._answered: OrderedDict[str, tuple[datetime, SlackAnswer]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[SlackAnswer]] = {}
        self._claims: list[tuple[str, asyncio.Future[bool]]] = []
        self._unwritten: dict[str, SlackAnswer] = {}
        self._writer: asyncio.Task[None] | None = None
        self._claimed = asyncio.Event()  # set when a claim is queued

    async def take(self, key: str) -> SlackAnswer | Busy | None:
        """None: this caller took `key` and must call `answered` with its answer. Else the
        first copy's answer, or BUSY when it has none to give within the wait."""
        known = self._answered.get(key)
        if known is not None:
            return known[1]
        pending = self._in_flight.get(key)
        if pending is not None:
            return await self._await_first(pending)
        mine: asyncio.Future[SlackAnswer] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = mine
        try:
            taken = await self._claim(key)
        except BaseException:
            del self._in_flight[key]
            mine.cancel()  # copies waiting on it answer BUSY
            raise
        if taken:
            return None
        del self._in_flight[key]
        mine.cancel()
        return await self._stored_answer(key)

    def answered(self, key: str, answer: SlackAnswer) -> None:
        """The answer to the request this process took under `key`: given to copies waiting in
        this process, kept in memory for later ones and stored with the next write."""
        now = self._clock.now()
        future = self._in_flight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(answer)
        self._answered[key] = (now, answer)
        while self._answered:
            first = next(iter(self._answered.values()))
            if now - first[0] <= REPLAY_RETENTION:
                break
            self._answered.popitem(last=False)
        self._unwritten[key] = answer
        self._ensure_writer()

    async def drain(self) -> None:
        """Wait until every claim and answer handed in is written (on shutdown, in tests)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _await_first(self, first: asyncio.Future[SlackAnswer]) -> SlackAnswer | Busy:
        await asyncio.wait((first,), timeout=self._wait)
        if first.done() and not first.cancelled():
            return first.result()
        return BUSY

    async def _stored_answer(self, key: str) -> SlackAnswer | Busy:
        """The answer another process (or this one before a restart) stored for `key`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            async with self._database.unit_of_work(read_only=True) as uow:
                stored = (await uow.slack_replays.answers([key])).get(key)
            if stored is not None:
                return stored
            if loop.time() >= deadline:
                return BUSY
            await asyncio.sleep(0.05)

    async def _claim(self, key: str) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._claims.append((key, future))
        self._claimed.set()
        self._ensure_writer()
        return await future

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="slack-replays"
            )

    async def _write(self) -> None:
        while True:
            if not self._claims:
                # Only answers: they wait a moment for the next claims to ride along with.
                self._claimed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._claimed.wait(), ANSWER_DELAY)
                if not self._claims and not self._unwritten:
                    return
            for _ in range(_JOIN_TURNS):  # claims read in these turns join the batch
                queued = len(self._claims)
                await asyncio.sleep(0)
                if len(self._claims) == queued:
                    break
            claims, self._claims = self._claims, []
            answers, self._unwritten = self._unwritten, {}
            try:
                async with self._database.unit_of_work() as uow:
                    await uow.slack_replays.record_answers(answers)
                    taken = await uow.slack_replays.claim_many(
                        [key for key, _ in claims], self._clock.now()
                    )
                    await uow.commit()
            except Exception as exc:
                # Claims fail (their requests are answered 503); lost answers leave their keys
                # taken but unanswered, so a replay of one is answered BUSY until pruned.
                log.warning(
                    "could not store %d Slack request claims and %d answers: %s",
                    len(claims),
                    len(answers),
                    type(exc).__name__,
                )
                for _, future in claims:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for key, future in claims:
                if not future.done():
                    future.set_result(key in taken)
            if not self._claims and not self._unwritten:
                return


async def prune_slack_replays(database: Database, clock: Clock, *, chunk: int = 500) -> int:
    """Forget the keys taken before the retention window (their signatures no longer verify);
    in short transactions of `chunk` keys. How many were forgotten."""
    before = clock.now() - REPLAY_RETENTION
    pruned = 0
    while True:
        async with database.unit_of_work() as uow:
            deleted = await uow.slack_replays.prune(before, chunk)
            await uow.commit()
        pruned += deleted
        if deleted < chunk:
            return pruned
