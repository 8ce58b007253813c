"""An escalation storm: thousands of Slack messages due at once, sent paced, none dropped.

Simulation on a fixed clock (default): N messages (default 3 000) across C channels (default 5)
are queued at once on a SQLite file; the real sender (`MessageSender`) sends them over real HTTP
to the fake Slack, which answers 429 with Retry-After a few times. Between sweeps the fixed clock
moves one second, as the 1-second "messages" job would: pacing decisions are measured in that
simulated time (sending 3 000 messages at 1/s per channel really takes 10 minutes).
`--real 20`: a short run on the system clock instead (20 messages, 2 channels, ~10 s).
Run: `.venv/bin/python -m bench.storm [N] [C]` or `.venv/bin/python -m bench.storm --real 20`.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from bot.clock import FixedClock, SystemClock
from bot.domain.model import OutgoingMessage
from bot.policy import load_policy
from bot.ports import Announcer, Clock, Directory, PostedMessage
from bot.services.deps import Deps
from bot.services.messaging import MessageSender
from handlers.slack_chat import SlackChat, make_web_client
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.fakes.slack_api import FakeSlack
from tests.paths import SPEC_EXAMPLE

POLICY_FILE = SPEC_EXAMPLE
T0 = datetime(2026, 3, 24, 10, 0, tzinfo=UTC)
RATE_LIMITS = 5  # 429s the fake Slack answers during the storm (Retry-After: 2)


class RecordingChat(SlackChat):
    """SlackChat that notes when (on the bench clock) each message went out, per channel."""

    def __init__(self, chat_url: str, token: str, clock: Clock) -> None:
        super().__init__(make_web_client(token, chat_url, rate_limit_retries=0))
        self.clock = clock
        self.sent: dict[str, list[datetime]] = defaultdict(list)

    async def post_message(
        self,
        channel: str,
        text: str,
        blocks: Sequence[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> PostedMessage:
        posted = await super().post_message(channel, text, blocks, thread_ts)
        self.sent[channel].append(self.clock.now())
        return posted


async def _enqueue(database: SqlDatabase, n: int, channels: int, now: datetime) -> None:
    async with database.unit_of_work() as uow:
        for i in range(n):
            await uow.messages.add(
                OutgoingMessage(
                    id=f"msg_{i:06d}",
                    dedupe_key=f"escalate:req_{i:06d}:1:card",
                    channel=f"C0STORM{i % channels}",
                    text=f"Escalated (level 1): request {i}",
                    created_at=now,
                    not_before=now,
                )
            )
        await uow.commit()


def _report(chat: RecordingChat, n: int, pending: int, took: float, sweeps: int) -> None:
    total = sum(len(times) for times in chat.sent.values())
    print(f"queued {n}, sent {total}, still pending {pending}, dropped {n - total - pending}")
    print(f"{sweeps} sweeps, {took:.1f} s of real time")
    for channel, times in sorted(chat.sent.items()):
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
        rate = (len(times) - 1) / span if span else float("nan")
        print(
            f"  {channel}: {len(times)} messages, {rate:.3f}/s over {span:.0f} s, "
            f"min gap {min(gaps, default=float('nan')):.2f} s, max gap {max(gaps, default=0):.2f} s"
        )


async def main(n: int, channels: int, real: bool) -> None:
    clock: Clock = SystemClock() if real else FixedClock(T0)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'storm.db'}"
        await upgrade(url)
        database = SqlDatabase(create_engine(url))
        try:
            async with FakeSlack() as slack:
                chat = RecordingChat(slack.base_url, slack.token, clock)
                deps = Deps(
                    database=database,
                    clock=clock,
                    policy=load_policy(POLICY_FILE),
                    announcer=cast(Announcer, None),
                    directory=cast(Directory, None),
                    notifiers={},
                    public_url="http://quorum.test",
                )
                sender = MessageSender(deps, chat)
                await _enqueue(database, n, channels, clock.now())
                if not real:
                    slack.fail_next("chat.postMessage", retry_after=2, count=RATE_LIMITS)
                started = time.perf_counter()
                sweeps = 0
                while await sender.pending() and sweeps < 10 * n:
                    await sender.send_due()
                    sweeps += 1
                    if isinstance(clock, FixedClock):
                        clock.advance(timedelta(seconds=1))
                    else:
                        await asyncio.sleep(0.2)  # the real run: sweep five times a second
                took = time.perf_counter() - started
                limited = len([c for c in slack.calls if c.status == 429])
                _report(chat, n, await sender.pending(), took, sweeps)
                print(f"429 answers honoured: {limited}")
        finally:
            await database.dispose()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--real":
        asyncio.run(main(int(args[1]) if len(args) > 1 else 20, 2, real=True))
    else:
        asyncio.run(
            main(int(args[0]) if args else 3000, int(args[1]) if len(args) > 1 else 5, real=False)
        )
