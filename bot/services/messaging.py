"""send_due: the paced sender of the durable `messages` queue (reminders, escalations, notices).

Slack allows about one message per second per channel. Each claimed message gets the next free
slot of its channel (kept in memory); one whose slot is later is put back with `not_before` set to
that slot instead of sleeping, so a storm is queued, never dropped, and other channels keep
flowing. A 429 moves the channel's next slot to `Retry-After` from now.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta

from bot.domain.backoff import next_attempt
from bot.domain.model import MessageState, OutgoingMessage
from bot.ports import Chat, ChatRateLimited, ChatUnavailable
from bot.services.deps import Deps

log = logging.getLogger(__name__)

SPACING = timedelta(seconds=1)  # Slack's chat.postMessage limit: ~1 per second per channel
_OUTAGE_RETRY_STEP = 4  # the backoff step an outage retries at: 8 × base at most
MAX_ATTEMPTS = 8  # Slack errors (channel gone, …), not 429s or outages: then give up
_DEFAULT_RETRY_AFTER = timedelta(seconds=1)
_CONCURRENCY = 8  # channels sent to at once
_FORGET_SLOTS_AFTER = timedelta(minutes=10)
SENDING = "message sender (reminders, escalations, notices)"


class MessageSender:
    """One per process: the channels' next free slots are this process's pacing memory (after a
    restart pacing starts afresh; Slack's 429s, which are honoured, bound the error)."""

    def __init__(self, deps: Deps, chat: Chat, *, spacing: timedelta = SPACING) -> None:
        self._deps = deps
        self._chat = chat
        self._spacing = spacing
        self._next_free: dict[str, datetime] = {}  # the next slot not yet handed out
        self._last_sent: dict[str, datetime] = {}  # when the channel last got a message
        self._slots: dict[str, datetime] = {}  # message id -> the slot it was put back for
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    def slot_of(self, message_id: str) -> datetime | None:
        """The slot a put-back message holds (for tests and the storm bench)."""
        return self._slots.get(message_id)

    async def send_due(self) -> int:
        """Claim due messages, send those whose channel slot has come, put the others back for
        their slot. Returns how many were sent."""
        deps = self._deps
        now = deps.clock.now()
        self._forget_old(now)
        async with deps.database.unit_of_work() as uow:
            claimed = list(
                await uow.messages.claim_due(now, deps.tuning.batch_size, now + deps.tuning.lease)
            )
            await uow.commit()
        by_channel: dict[str, list[OutgoingMessage]] = defaultdict(list)
        later: list[OutgoingMessage] = []
        for message in claimed:
            slot = self._slot_for(message, now)
            if slot > now:
                message.not_before = slot
                later.append(message)
            else:
                by_channel[message.channel].append(message)
        if later:
            async with deps.database.unit_of_work() as uow:
                for message in later:
                    await uow.messages.record_attempt(message)  # releases the lease
                await uow.commit()
        sent = await asyncio.gather(*(self._send_all(batch) for batch in by_channel.values()))
        return sum(sent)

    def _slot_for(self, message: OutgoingMessage, now: datetime) -> datetime:
        """When `message` may go: now, or a later slot it is put back for. Two rules: a channel
        gets a message at most every `spacing` (what Slack enforces), and new messages queue
        behind the slots already handed out, so a storm spreads evenly over time."""
        channel = message.channel
        last = self._last_sent.get(channel)
        ready = now if last is None else max(now, last + self._spacing)
        held = self._slots.get(message.id)
        if held is not None:
            slot = max(held, ready)
        else:
            slot = max(ready, self._next_free.get(channel, now))
            self._next_free[channel] = slot + self._spacing
        if slot <= now:
            self._last_sent[channel] = now  # reserved: later messages this sweep wait
            return now
        self._slots[message.id] = slot
        return slot

    def _forget_old(self, now: datetime) -> None:
        horizon = now - _FORGET_SLOTS_AFTER
        for message_id in [m for m, slot in self._slots.items() if slot < horizon]:
            del self._slots[message_id]

    async def _send_all(self, messages: list[OutgoingMessage]) -> int:
        sent = 0
        async with self._limit:
            for message in messages:
                sent += await self._send(message)
        return sent

    async def _send(self, message: OutgoingMessage) -> int:
        deps = self._deps
        self._slots.pop(message.id, None)
        try:
            blocks = [dict(block) for block in message.blocks] or None
            if message.dm:
                await self._chat.send_dm(message.channel, message.text, blocks)
            else:
                await self._chat.post_message(
                    message.channel, message.text, blocks, thread_ts=message.thread_ts
                )
        except ChatRateLimited as exc:
            now = deps.clock.now()
            wait = (
                timedelta(seconds=exc.retry_after)
                if exc.retry_after is not None
                else _DEFAULT_RETRY_AFTER
            )
            # Not counted as an attempt: being told to wait is not a failure of the message.
            message.not_before = now + wait
            message.last_error = "rate limited"
            self._next_free[message.channel] = max(
                self._next_free.get(message.channel, now), message.not_before + self._spacing
            )
            self._slots[message.id] = message.not_before
            # Nothing else goes to this channel before then either.
            self._last_sent[message.channel] = message.not_before - self._spacing
            deps.failures.failed(log, SENDING, exc, now, retry_at=message.not_before)
        except ChatUnavailable as exc:
            # Slack is down: not counted as an attempt either (an outage of any length must not
            # use up a message's attempts); retried every 20-40 s (base 5 s) while it lasts.
            now = deps.clock.now()
            message.last_error = "Slack unavailable"
            message.not_before = next_attempt(
                _OUTAGE_RETRY_STEP,
                now,
                jitter=deps.jitter(),
                base=deps.tuning.backoff_base,
                cap=deps.tuning.backoff_cap,
            )
            deps.failures.failed(log, SENDING, exc, now, retry_at=message.not_before)
        except Exception as exc:  # a Slack error (channel gone, …): retried with backoff
            now = deps.clock.now()
            message.attempts += 1
            message.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if message.attempts >= MAX_ATTEMPTS:
                message.state = MessageState.FAILED
                log.warning("giving up on message %s: %s", message.id, message.last_error)
            else:
                message.not_before = next_attempt(
                    message.attempts,
                    now,
                    jitter=deps.jitter(),
                    base=deps.tuning.backoff_base,
                    cap=deps.tuning.backoff_cap,
                )
                deps.failures.failed(log, SENDING, exc, now, retry_at=message.not_before)
        else:
            deps.failures.succeeded(log, SENDING, deps.clock.now())
            message.attempts += 1
            message.state = MessageState.SENT
            message.sent_at = deps.clock.now()
            message.last_error = None
        async with deps.database.unit_of_work() as uow:
            await uow.messages.record_attempt(message)
            await uow.commit()
        return 1 if message.state is MessageState.SENT else 0

    async def pending(self) -> int:
        async with self._deps.database.unit_of_work(read_only=True) as uow:
            return await uow.messages.count_pending()
