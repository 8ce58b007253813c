"""Inbound webhook ids are remembered for the retention window, then forgotten by the hourly
retention job: a redelivery inside the window opens nothing new, one after it opens a request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.app import RUNTIME, tuning_from
from bot.clock import FixedClock
from bot.services.deps import Tuning
from bot.services.jobs import Job
from bot.settings import load_settings
from tests.e2e.harness import Env, body_for, running_env

START = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def dated(db_url: str, clock: FixedClock) -> AsyncIterator[Env]:
    retention = Tuning(webhook_retention=timedelta(days=7))  # as QUORUM_WEBHOOK_RETENTION=7d
    async with running_env(db_url, clock=clock, tuning=retention) as running:
        yield running


def test_the_retention_window_is_configured_by_its_setting() -> None:
    configured = load_settings(
        {"QUORUM_WEBHOOK_RETENTION": "7d", "QUORUM_CALLBACK_RETRY_WINDOW": "2h"}
    )
    assert tuning_from(configured) == Tuning(
        retry_window=timedelta(hours=2), webhook_retention=timedelta(days=7)
    )
    assert tuning_from(load_settings({})).webhook_retention == timedelta(days=8)


async def remembered(env: Env, webhook_id: str) -> bool:
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        return await uow.webhooks.get("generic", webhook_id) is not None


async def test_redelivery_after_the_retention_window_opens_a_new_request(
    dated: Env, clock: FixedClock
) -> None:
    body = body_for(environment="staging", change_ticket=None)
    status, first = await dated.quorum.webhook(body, webhook_id="msg_old")
    assert status == 202

    clock.advance(timedelta(days=6, hours=23))  # inside the window: a replay
    status, replay = await dated.quorum.webhook(body, webhook_id="msg_old")
    assert (status, replay["id"]) == (200, first["id"])
    status, recent = await dated.quorum.webhook(body, webhook_id="msg_recent")
    assert status == 202

    clock.advance(timedelta(hours=2))  # msg_old is now 7 days and 1 hour old
    dated.quorum.app[RUNTIME].scheduler.wake(Job.RETENTION)  # the hourly job, run now
    for _ in range(100):
        if not await remembered(dated, "msg_old"):
            break
        await asyncio.sleep(0.05)
    assert not await remembered(dated, "msg_old")
    assert await remembered(dated, "msg_recent")

    status, again = await dated.quorum.webhook(body, webhook_id="msg_old")
    assert status == 202
    assert again["id"] not in {first["id"], recent["id"]}
    status, replay = await dated.quorum.webhook(body, webhook_id="msg_recent")
    assert (status, replay["id"]) == (200, recent["id"])
