"""An SLA escalation widens only the rules it names, end to end over signed webhooks and clicks,
on a fixed clock (SQLite and PostgreSQL).

The attack this reproduces: production needs owner-review (the owning team) and, at risk high,
security-review (security); the ladder escalates to sre after 1 h. Escalation used to let sre fill
every rule, so two sre approvals decided the request without security's sign-off.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.clock import FixedClock
from bot.domain.events import EventKind
from bot.services.timers import run_due
from handlers.action_ids import ActionId
from tests.e2e.harness import POLICY, SRE, Env, running_env

OWNER_2 = "U0WEB2"
SECURITY = "U0SEC1"
START = datetime.now(UTC).replace(microsecond=0)


def scoped_policy() -> dict[str, Any]:
    policy = copy.deepcopy(POLICY)
    production = policy["environments"]["production"]
    # sre is no rule's team here: whatever an sre member may approve comes from the escalation.
    production["rules"] = [{"name": "owner-review", "from": "owner", "approvals": 1}]
    production["sla"] = {"escalate": [{"after": "1h", "to": "sre"}], "expire_after": "8h"}
    return policy


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def scoped(db_url: str, clock: FixedClock) -> AsyncIterator[Env]:
    async with running_env(db_url, policy=scoped_policy(), clock=clock) as running:
        yield running


async def click_approve(env: Env, user: str, request_id: str) -> None:
    """A signed Approve click on the card (verified against Quorum's fixed clock)."""
    status, _ = await env.quorum.click(ActionId.approve, user, request_id)
    assert status == 200


async def ephemeral_to(env: Env, user: str, count: int = 1) -> str:
    calls = await env.slack.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") == user, count=count
    )
    return str(calls[-1].args["text"])


def card_texts(call_args: dict[str, Any]) -> str:
    return json.dumps(call_args.get("blocks"), ensure_ascii=False)


async def test_escalation_never_fills_the_security_sign_off(scoped: Env, clock: FixedClock) -> None:
    env = scoped
    request_id = await env.open(service="vault")  # vault is high risk: security-review too
    _, data = await env.quorum.status(request_id)
    assert [(r["name"], r["team"], r["widened_by"]) for r in data["rules"]] == [
        ("owner-review", "web", []),
        ("security-review", "security", []),
    ]
    assert data["next_timer"] == "escalates to sre in 1 h, who may then also approve owner-review"

    # Before the escalation sre may approve nothing.
    await click_approve(env, SRE[0], request_id)
    assert "not an approver" in await ephemeral_to(env, SRE[0])

    clock.advance(timedelta(hours=1, minutes=1))
    await run_due(env.quorum.deps)
    _, data = await env.quorum.status(request_id)
    assert data["escalation_level"] == 1
    assert [(r["name"], r["widened_by"]) for r in data["rules"]] == [
        ("owner-review", ["sre"]),
        ("security-review", []),
    ]
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        fired = [
            e.data
            for e in await uow.events.list_for(request_id)
            if e.kind == EventKind.ESCALATION_FIRED
        ]
    assert fired == [{"level": 1, "team": "sre", "rules": ["owner-review"]}]
    notice = await env.slack.wait_for(
        "chat.postMessage", lambda c: "Escalated (level 1)" in str(c.args.get("text"))
    )
    assert "you may now also approve owner-review (or reject it)" in notice[0].args["text"]
    await env.slack.wait_for(
        "chat.update",
        lambda c: "Escalated (level 1): sre may also approve owner-review" in card_texts(c.args),
        timeout=10,
    )

    # The attack: two sre approvals. The first fills owner-review, the second is not needed:
    # security-review is not theirs to give, and the request stays pending.
    await click_approve(env, SRE[0], request_id)
    await click_approve(env, SRE[1], request_id)
    refusal = await ephemeral_to(env, SRE[1])
    assert "The rules you can approve for (owner-review) are already satisfied" in refusal
    assert "waiting on security" in refusal
    _, data = await env.quorum.status(request_id)
    assert data["state"] == "pending"
    assert [v["user"] for v in data["votes"]] == [SRE[0]]
    assert [(r["name"], r["approved_by"], r["met"]) for r in data["rules"]] == [
        ("owner-review", [SRE[0]], True),
        ("security-review", [], False),
    ]
    assert data["waiting_on"] == ["security"]
    assert env.pipeline.received == []

    # The owning team is no longer needed either; security's approval decides it.
    await click_approve(env, OWNER_2, request_id)
    assert "already satisfied" in await ephemeral_to(env, OWNER_2)
    await click_approve(env, SECURITY, request_id)
    callbacks = await env.pipeline.wait_for(1)
    assert callbacks[0].body["decision"] == "approved"
    assert [v["user"] for v in callbacks[0].body["votes"]] == [SRE[0], SECURITY]
    _, data = await env.quorum.status(request_id)
    assert data["state"] == "approved"
    assert [(r["name"], r["approved_by"]) for r in data["rules"]] == [
        ("owner-review", [SRE[0]]),
        ("security-review", [SECURITY]),
    ]


async def test_a_step_that_names_the_sign_off_widens_it(db_url: str, clock: FixedClock) -> None:
    policy = scoped_policy()
    policy["environments"]["production"]["sla"]["escalate"] = [
        {"after": "1h", "to": "sre", "for_rules": ["security-review"]}
    ]
    async with running_env(db_url, policy=policy, clock=clock) as env:
        request_id = await env.open(service="vault")
        clock.advance(timedelta(hours=1, minutes=1))
        await run_due(env.quorum.deps)
        _, data = await env.quorum.status(request_id)
        assert [(r["name"], r["widened_by"]) for r in data["rules"]] == [
            ("owner-review", []),
            ("security-review", ["sre"]),
        ]
        await click_approve(env, SRE[0], request_id)
        await click_approve(env, SRE[1], request_id)  # owner-review is still the owner's
        assert "already satisfied" in await ephemeral_to(env, SRE[1])
        _, data = await env.quorum.status(request_id)
        assert data["state"] == "pending"
        assert [(r["name"], r["approved_by"]) for r in data["rules"]] == [
            ("owner-review", []),
            ("security-review", [SRE[0]]),
        ]
        await click_approve(env, OWNER_2, request_id)
        callbacks = await env.pipeline.wait_for(1)
        assert callbacks[0].body["decision"] == "approved"
