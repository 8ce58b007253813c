"""SLA timers end to end on a fixed clock: reminders, escalations, expiry, auto-approval, business
hours, a restart between a deadline and its processing, and two processes on one database."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.app import RUNTIME
from bot.clock import FixedClock
from bot.domain.eligibility import RefusalCode
from bot.domain.events import EventKind
from bot.domain.model import VoteKind
from bot.services.messaging import MessageSender
from bot.services.timers import run_due
from bot.services.voting import VoteCommand, VoteResult
from handlers.slack_chat import SlackChat, make_web_client
from tests.e2e.harness import POLICY, SRE, Env, Quorum, running_env

OWNER_1, OWNER_2, OWNER_3 = "U0WEB1", "U0WEB2", "U0WEB3"  # U0WEB1 is the requester
RM = ["U0RM1", "U0RM2"]
CAB = ["U0CAB1", "U0CAB2"]
TUESDAY = datetime(2026, 3, 24, 10, 0, tzinfo=UTC)
FRIDAY_EVENING = datetime(2026, 3, 27, 18, 0, tzinfo=UTC)  # 18:00 GMT in London


def timer_policy() -> dict[str, Any]:
    policy = copy.deepcopy(POLICY)
    policy["teams"]["cab"] = {"channel": "C0CAB", "members": CAB}
    envs = policy["environments"]
    envs["production"]["sla"] = {
        "remind_after": "10m",
        "escalate": [{"after": "30m", "to": "release-managers"}, {"after": "1h", "to": "cab"}],
        "expire_after": "2h",
        "on_expire": "reject",
    }
    envs["staging"]["sla"] = {"expire_after": "1h", "on_expire": "approve"}
    envs["office"] = {
        "rules": [{"name": "owner-review", "from": "owner", "approvals": 1}],
        "sla": {
            "escalate": [{"after": "1h", "to": "cab"}],
            "expire_after": "8h",
            "business_hours": {"start": "09:00", "end": "17:00", "timezone": "Europe/London"},
        },
    }
    return policy


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(TUESDAY)


@pytest.fixture
async def timed(db_url: str, clock: FixedClock) -> AsyncIterator[Env]:
    async with running_env(db_url, policy=timer_policy(), clock=clock) as running:
        yield running


async def kinds_of(env: Env, request_id: str) -> list[str]:
    async with env.quorum.deps.database.unit_of_work() as uow:
        return [event.kind for event in await uow.events.list_for(request_id)]


async def escalations(env: Env, request_id: str) -> list[int]:
    async with env.quorum.deps.database.unit_of_work() as uow:
        events = await uow.events.list_for(request_id)
    return [e.data["level"] for e in events if e.kind == EventKind.ESCALATION_FIRED]


def dms_to(env: Env, user: str) -> list[str]:
    channel = env.slack.dm_channel(user)
    return [
        str(c.args.get("text"))
        for c in env.slack.calls_to("chat.postMessage", lambda c: c.args.get("channel") == channel)
    ]


async def vote(
    env: Env, user: str, request_id: str, kind: VoteKind = VoteKind.APPROVE, reason: str = ""
) -> VoteResult:
    """Votes go through the vote use case, not Slack: bolt checks request signatures against the
    real time, which a fixed clock days away from it cannot satisfy."""
    assert env.quorum.app is not None
    voting = env.quorum.app[RUNTIME].voting
    return await voting.cast(VoteCommand(request_id, user, kind, reason or None))


async def drain(env: Env, clock: FixedClock, limit: int = 30) -> None:
    """Tick the fixed clock a second at a time and send until the queue is empty (paced messages
    to one channel wait for their one-second slots, which a fixed clock only reaches this way)."""
    chat = SlackChat(make_web_client(env.slack.token, env.slack.base_url, rate_limit_retries=0))
    sender = MessageSender(env.quorum.deps, chat)
    for _ in range(limit):
        await sender.send_due()
        async with env.quorum.deps.database.unit_of_work() as uow:
            if await uow.messages.count_pending() == 0:
                return
        clock.advance(timedelta(seconds=1))
    raise AssertionError("the message queue did not drain")


def texts(call_args: dict[str, Any]) -> str:
    return json.dumps(call_args.get("blocks"), ensure_ascii=False)


async def test_reminders_go_to_eligible_non_voters_once(timed: Env, clock: FixedClock) -> None:
    request_id = await timed.open()
    assert (await vote(timed, OWNER_2, request_id)).vote is not None
    await run_due(timed.quorum.deps)
    assert EventKind.REMINDER_SENT not in await kinds_of(timed, request_id)

    clock.advance(timedelta(minutes=11))
    await run_due(timed.quorum.deps)
    expected = {OWNER_3, *SRE}  # not the requester, not OWNER_2 who voted
    opened = await timed.slack.wait_for("conversations.open", count=len(expected))
    assert {c.args["users"] for c in opened} == expected
    channels = {timed.slack.dm_channel(user) for user in expected}
    await timed.slack.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") in channels, count=len(channels)
    )
    for user in expected:
        (text,) = dms_to(timed, user)
        assert "waiting for your approval" in text
        assert "https://slack.com/archives/C0WEB/p" in text
    assert dms_to(timed, OWNER_1) == dms_to(timed, OWNER_2) == []

    await run_due(timed.quorum.deps)  # nothing new is due: no second round
    assert (await kinds_of(timed, request_id)).count(EventKind.REMINDER_SENT) == 1


async def test_escalation_ladder_widens_the_owner_rules(timed: Env, clock: FixedClock) -> None:
    """Each step lets its team also fill the `from: owner` rules (the default `for_rules`), and
    nothing else: sre-signoff stays sre's."""
    request_id = await timed.open()
    posted = await timed.slack.wait_for(
        "chat.postMessage", lambda c: c.ok and request_id in texts(c.args)
    )
    card_ts = posted[0].response["ts"]
    refused = await vote(timed, RM[0], request_id)
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.NOT_ELIGIBLE
    _, data = await timed.quorum.status(request_id)
    assert data["next_timer"] == (
        "escalates to release-managers in 30 min, who may then also approve owner-review"
    )
    assert data["escalation_level"] == 0

    clock.advance(timedelta(minutes=31))
    await run_due(timed.quorum.deps)
    assert await escalations(timed, request_id) == [1]
    thread = await timed.slack.wait_for(
        "chat.postMessage", lambda c: "Escalated (level 1)" in str(c.args.get("text"))
    )
    assert thread[0].args["channel"] == "C0WEB"
    assert thread[0].args["thread_ts"] == card_ts
    assert f"<@{RM[0]}> <@{RM[1]}>" in thread[0].args["text"]
    assert "you may now also approve owner-review (or reject it)" in thread[0].args["text"]
    await timed.slack.wait_for(
        "chat.update",
        lambda c: (
            "Escalated (level 1): release-managers may also approve owner-review" in texts(c.args)
        ),
        timeout=10,
    )
    _, data = await timed.quorum.status(request_id)
    assert data["escalation_level"] == 1
    assert (
        data["next_timer"] == "escalates to cab in 29 min, who may then also approve owner-review"
    )
    assert [r["widened_by"] for r in data["rules"]] == [["release-managers"], []]

    # The escalated team's members may fill owner-review now, and their votes count; once it is
    # met they are not needed: sre-signoff is not theirs to give.
    assert (await vote(timed, RM[0], request_id)).vote is not None
    assert (await vote(timed, RM[1], request_id)).vote is not None
    _, data = await timed.quorum.status(request_id)
    assert [v["user"] for v in data["votes"]] == [RM[0], RM[1]]
    assert data["rules"][0]["approved_by"] == [RM[0], RM[1]]
    assert data["rules"][1]["approved_by"] == []
    assert data["state"] == "pending"

    clock.advance(timedelta(minutes=30))
    await run_due(timed.quorum.deps)
    await run_due(timed.quorum.deps)
    assert await escalations(timed, request_id) == [1, 2]
    _, data = await timed.quorum.status(request_id)
    assert [r["widened_by"] for r in data["rules"]] == [["release-managers", "cab"], []]
    refused = await vote(timed, CAB[0], request_id)  # owner-review is met; sre-signoff is sre's
    assert refused.refusal is not None
    assert refused.refusal.code is RefusalCode.NOT_NEEDED
    await timed.slack.wait_for("chat.postMessage", lambda c: c.args.get("channel") == "C0CAB")
    level_two = await timed.slack.wait_for(
        "chat.postMessage", lambda c: "Escalated (level 2)" in str(c.args.get("text")), count=2
    )
    assert sorted(c.args["channel"] for c in level_two) == ["C0CAB", "C0WEB"]
    assert len(timed.slack.calls_to("chat.postMessage", lambda c: "level 1" in str(c.args))) == 1


async def test_expiry_rejects_and_tells_the_requester(timed: Env, clock: FixedClock) -> None:
    request_id = await timed.open()
    clock.advance(timedelta(hours=2, minutes=1))
    await run_due(timed.quorum.deps)
    callbacks = await timed.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "expired"
    assert "expired" in callbacks[0].body["reason"]
    await timed.slack.wait_for("chat.postMessage", lambda c: c.args.get("channel") == "DU0WEB1")
    assert "expired" in dms_to(timed, OWNER_1)[0]
    _, data = await timed.quorum.status(request_id)
    assert data["state"] == "expired"
    assert data["next_timer"] is None
    # Straight to expiry after an outage: no reminder storm, no escalation announcements.
    kinds = await kinds_of(timed, request_id)
    assert EventKind.REMINDER_SENT not in kinds
    assert EventKind.ESCALATION_FIRED not in kinds
    await run_due(timed.quorum.deps)
    assert (await kinds_of(timed, request_id)).count(EventKind.REQUEST_EXPIRED) == 1


async def test_low_risk_auto_approves_after_the_veto_window(timed: Env, clock: FixedClock) -> None:
    request_id = await timed.open(environment="staging", change_ticket=None)
    _, data = await timed.quorum.status(request_id)
    assert data["next_timer"] == "auto-approves at 11:00 UTC unless someone rejects"
    await timed.slack.wait_for(
        "chat.postMessage", lambda c: "auto-approves at 11:00 UTC" in texts(c.args)
    )
    clock.advance(timedelta(minutes=59))
    await run_due(timed.quorum.deps)
    assert timed.pipeline.received == []
    clock.advance(timedelta(minutes=2))
    await run_due(timed.quorum.deps)
    callbacks = await timed.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "approved"
    assert "auto-approved" in callbacks[0].body["reason"]


async def test_a_rejection_inside_the_veto_window_wins(timed: Env, clock: FixedClock) -> None:
    request_id = await timed.open(environment="staging", change_ticket=None)
    clock.advance(timedelta(minutes=30))
    rejected = await vote(timed, OWNER_2, request_id, VoteKind.REJECT, "smoke tests are red")
    assert rejected.decided
    callbacks = await timed.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "rejected"
    clock.advance(timedelta(hours=1))
    await run_due(timed.quorum.deps)
    kinds = await kinds_of(timed, request_id)
    assert EventKind.REQUEST_APPROVED not in kinds
    assert kinds.count(EventKind.CALLBACK_QUEUED) == 1


async def test_business_hours_hold_the_ladder_over_the_weekend(
    db_url: str, clock: FixedClock
) -> None:
    clock.set(FRIDAY_EVENING)
    async with running_env(db_url, policy=timer_policy(), clock=clock) as env:
        request_id = await env.open(environment="office", change_ticket=None)
        clock.set(datetime(2026, 3, 28, 12, tzinfo=UTC))  # Saturday noon
        await run_due(env.quorum.deps)
        assert await escalations(env, request_id) == []
        _, data = await env.quorum.status(request_id)
        # Monday 10:00 BST (clocks went forward on Sunday) is 09:00 UTC: 45 h away.
        assert data["next_timer"] == (
            "escalates to cab in 1 d 21 h, who may then also approve owner-review"
        )
        assert data["next_timer_at"] == "2026-03-30T09:00:00Z"
        clock.set(datetime(2026, 3, 30, 8, 59, tzinfo=UTC))
        await run_due(env.quorum.deps)
        assert await escalations(env, request_id) == []
        clock.set(datetime(2026, 3, 30, 9, 0, tzinfo=UTC))
        await run_due(env.quorum.deps)
        assert await escalations(env, request_id) == [1]


async def test_a_deadline_passed_while_stopped_fires_once_after_restart(
    timed: Env, clock: FixedClock
) -> None:
    request_id = await timed.open()
    await timed.quorum.stop()
    clock.advance(timedelta(minutes=31))  # the escalation falls due while nothing runs
    old = timed.quorum
    timed.quorum = Quorum(old.settings, old.policy, old.tuning, clock)
    await timed.quorum.start()  # its first timers sweep re-arms and fires
    await run_due(timed.quorum.deps)
    await timed.slack.wait_for(
        "chat.postMessage", lambda c: "Escalated (level 1)" in str(c.args.get("text"))
    )
    await run_due(timed.quorum.deps)
    assert await escalations(timed, request_id) == [1]
    sent = timed.slack.calls_to("chat.postMessage", lambda c: "level 1" in str(c.args))
    assert len(sent) == 1


async def test_two_processes_fire_each_step_once(timed: Env, clock: FixedClock) -> None:
    ids = [await timed.open(version=f"v1.0.{i}") for i in range(3)]
    other = Quorum(timed.quorum.settings, timed.quorum.policy, timed.quorum.tuning, clock)
    await other.start()
    try:
        for minutes in (11, 20, 31, 61):
            clock.set(TUESDAY + timedelta(minutes=minutes))
            await asyncio.gather(run_due(timed.quorum.deps), run_due(other.deps))
            await drain(timed, clock)
        for request_id in ids:
            assert await escalations(timed, request_id) == [1, 2]
            kinds = await kinds_of(timed, request_id)
            assert kinds.count(EventKind.REMINDER_SENT) == 3
        # level 2 goes to the card thread and C0CAB for each request, each exactly once
        sent = timed.slack.calls_to(
            "chat.postMessage", lambda c: "Escalated (level" in str(c.args.get("text"))
        )
        assert len(sent) == 3 * (1 + 2)
    finally:
        await other.stop()
