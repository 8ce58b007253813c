"""The paced message queue against the fake Slack (real HTTP) and a real database, on a fixed
clock: one message per second per channel, 429 Retry-After honoured, DMs, dedupe, giving up.

No Quorum app runs here: its own "messages" job would race the sender under test for the rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from bot.clock import FixedClock
from bot.domain.model import OutgoingMessage
from bot.policy import Policy
from bot.ports import Announcer, Directory
from bot.services.deps import Deps
from bot.services.messaging import MAX_ATTEMPTS, MessageSender
from handlers.slack_chat import SlackChat, make_web_client
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.e2e.harness import POLICY
from tests.fakes.slack_api import FakeSlack

T0 = datetime(2026, 3, 24, 10, 0, tzinfo=UTC)


@dataclass
class Rig:
    deps: Deps
    slack: FakeSlack


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def env(db_url: str, clock: FixedClock) -> AsyncIterator[Rig]:
    await upgrade(db_url)
    database = SqlDatabase(create_engine(db_url))
    try:
        async with FakeSlack() as slack:
            deps = Deps(
                database=database,
                clock=clock,
                policy=Policy.from_mapping(POLICY, "policy.yml"),
                announcer=cast(Announcer, None),  # the sender never announces
                directory=cast(Directory, None),
                notifiers={},
                public_url="http://quorum.test",
            )
            yield Rig(deps, slack)
    finally:
        await database.dispose()


def sender_for(env: Rig) -> MessageSender:
    chat = SlackChat(make_web_client(env.slack.token, env.slack.base_url, rate_limit_retries=0))
    return MessageSender(env.deps, chat)


async def enqueue(env: Rig, key: str, channel: str, *, dm: bool = False) -> bool:
    now = env.deps.clock.now()
    async with env.deps.database.unit_of_work() as uow:
        added = await uow.messages.add(
            OutgoingMessage(
                id=f"msg_{key}",
                dedupe_key=key,
                channel=channel,
                text=f"text {key}",
                created_at=now,
                not_before=now,
                dm=dm,
            )
        )
        await uow.commit()
    return added


def posted(env: Rig, channel: str) -> list[str]:
    return [
        str(c.args["text"])
        for c in env.slack.calls_to("chat.postMessage", lambda c: c.args.get("channel") == channel)
        if c.ok
    ]


async def test_one_message_per_second_per_channel(env: Rig, clock: FixedClock) -> None:
    for i in range(3):
        assert await enqueue(env, f"a{i}", "C0A")
    assert await enqueue(env, "b0", "C0B")
    assert not await enqueue(env, "a0", "C0A")  # the same step queued twice is one message
    sender = sender_for(env)

    assert await sender.send_due() == 2  # one per channel now; a1, a2 wait for their slots
    assert sender.slot_of("msg_a1") == T0 + timedelta(seconds=1)
    assert sender.slot_of("msg_a2") == T0 + timedelta(seconds=2)
    assert await sender.send_due() == 0  # same instant: nothing more may go
    clock.advance(timedelta(seconds=1))
    assert await sender.send_due() == 1
    clock.advance(timedelta(seconds=1))
    assert await sender.send_due() == 1
    assert posted(env, "C0A") == ["text a0", "text a1", "text a2"]
    assert posted(env, "C0B") == ["text b0"]
    assert await sender.pending() == 0


async def test_429_retry_after_is_honoured_and_nothing_is_dropped(
    env: Rig, clock: FixedClock
) -> None:
    assert await enqueue(env, "x", "C0A")
    env.slack.fail_next("chat.postMessage", retry_after=7)
    sender = sender_for(env)
    assert await sender.send_due() == 0
    assert await sender.pending() == 1
    clock.advance(timedelta(seconds=6))
    assert await sender.send_due() == 0
    assert posted(env, "C0A") == []
    clock.advance(timedelta(seconds=1))
    assert await sender.send_due() == 1
    assert posted(env, "C0A") == ["text x"]


async def test_dm_opens_the_conversation_and_a_permanent_error_gives_up(
    env: Rig, clock: FixedClock
) -> None:
    assert await enqueue(env, "dm", "U0WEB2", dm=True)
    sender = sender_for(env)
    assert await sender.send_due() == 1
    opened = await env.slack.wait_for("conversations.open")
    assert opened[0].args["users"] == "U0WEB2"
    assert posted(env, env.slack.dm_channel("U0WEB2")) == ["text dm"]

    assert await enqueue(env, "gone", "C0GONE")
    env.slack.fail_next("chat.postMessage", error="channel_not_found", count=20)
    for _ in range(8):  # retried with backoff, then given up: it leaves the queue
        await sender.send_due()
        clock.advance(timedelta(hours=2))
    assert await sender.pending() == 0
    assert posted(env, "C0GONE") == []


@pytest.mark.parametrize("outage", ["unreachable", "500"])
async def test_an_outage_of_any_length_drops_no_message(
    env: Rig, clock: FixedClock, outage: str
) -> None:
    """Slack down (connections refused, or 5xx) is not a fault of the message: it stays queued
    well past MAX_ATTEMPTS failed sends, retried every 20-40 s, and goes once Slack is back."""
    assert await enqueue(env, "outage", "C0A")
    sender = sender_for(env)
    if outage == "unreachable":
        await env.slack.go_down()
    else:
        env.slack.fail_all(500)
    # (unreachable: each send waits out slack-sdk's connection retries, ~2.5 s, so fewer rounds;
    # both kinds are the same ChatUnavailable to the sender)
    for _ in range(MAX_ATTEMPTS + 1 if outage == "500" else 3):
        assert await sender.send_due() == 0
        clock.advance(timedelta(seconds=40))
    assert await sender.pending() == 1
    if outage == "unreachable":
        await env.slack.come_back()
    else:
        env.slack.recover_all()
    clock.advance(timedelta(seconds=40))
    assert await sender.send_due() == 1
    assert posted(env, "C0A") == ["text outage"]
