"""One delivery sweep over real HTTP and a real database: the callbacks it claimed go out
together (a pipeline that hangs does not hold up the others), and every outcome is recorded,
with its audit event and a redrawn card, once they are all back.

No Quorum app runs here: its own "deliveries" job would race the sweep under test for the rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
from aiohttp import web

from bot.clock import FixedClock
from bot.domain.model import Delivery, DeliveryState
from bot.pipelines.callback_keys import Ed25519Signer
from bot.pipelines.egress import EgressPolicy
from bot.pipelines.generic import GenericAdapter
from bot.pipelines.signing import StandardWebhookVerifier
from bot.policy import Policy
from bot.ports import Announcer, Directory
from bot.services.delivery import deliver_due
from bot.services.deps import Deps
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.e2e.harness import CALLBACK_KEY, POLICY, WEBHOOK_SECRET, FakePipeline
from tests.fakes.loopback import LoopbackServer
from tests.storage.builders import NOW, a_request


class HangingPipeline(LoopbackServer):
    """A callback endpoint that answers only when released."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{self.base_url}/callback"

    def routes(self, app: web.Application) -> None:
        async def receive(_request: web.Request) -> web.Response:
            self.called.set()
            await self.release.wait()
            return web.Response(status=204)

        app.router.add_post("/callback", receive)

    async def stop(self) -> None:
        self.release.set()  # a held answer must not keep the server from stopping
        await super().stop()


def _delivery(delivery_id: str, request_id: str, url: str) -> Delivery:
    body = {"type": "approval.decided", "request_id": request_id, "decision": "approved"}
    return Delivery(
        id=delivery_id,
        request_id=request_id,
        target="generic",
        payload={"url": url, "body": body},
        created_at=NOW,
        next_attempt_at=NOW,
    )


async def _deps(db_url: str, http: aiohttp.ClientSession) -> Deps:
    await upgrade(db_url)
    clock = FixedClock(NOW)
    generic = GenericAdapter(
        StandardWebhookVerifier([WEBHOOK_SECRET], clock=clock.now),
        Ed25519Signer(CALLBACK_KEY),  # callbacks have a key of their own
        http,
        clock.now,
        egress=EgressPolicy.parse("127.0.0.1"),  # the fake pipelines listen on loopback
    )
    return Deps(
        database=SqlDatabase(create_engine(db_url)),
        clock=clock,
        policy=Policy.from_mapping(POLICY, "policy.yml"),
        announcer=cast(Announcer, None),  # the sweep only wakes the announcer
        directory=cast(Directory, None),
        notifiers={"generic": generic},
        public_url="http://quorum.test",
    )


async def _pipelines() -> AsyncIterator[tuple[HangingPipeline, FakePipeline]]:
    fast = FakePipeline()
    fast.clock = FixedClock(NOW)
    await fast.start()
    try:
        async with HangingPipeline() as slow:
            yield slow, fast
    finally:
        await fast.stop()


async def test_a_hanging_pipeline_does_not_hold_up_the_others(db_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        deps = await _deps(db_url, http)
        woken: list[str] = []
        deps.wake = woken.append
        try:
            async for slow, fast in _pipelines():
                async with deps.database.unit_of_work() as uow:
                    await uow.requests.add(a_request("req-slow"))
                    await uow.requests.add(a_request("req-fast"))
                    await uow.outbox.add(_delivery("dlv-a-slow", "req-slow", slow.url))
                    await uow.outbox.add(_delivery("dlv-b-fast", "req-fast", fast.url))
                    await uow.commit()

                sweep = asyncio.create_task(deliver_due(deps))
                # Both callbacks are out while the slow pipeline (claimed first) is still thinking.
                await fast.wait_for(1)
                await asyncio.wait_for(slow.called.wait(), 10)
                assert not sweep.done()
                async with deps.database.unit_of_work(read_only=True) as uow:
                    pending = await uow.outbox.get_for_request("req-fast")
                assert pending[0].state is DeliveryState.PENDING  # recorded together, below

                slow.release.set()
                assert await asyncio.wait_for(sweep, 10) == 2
        finally:
            await deps.database.dispose()
        deps.database = SqlDatabase(create_engine(db_url))
        try:
            async with deps.database.unit_of_work(read_only=True) as uow:
                stored = {
                    rid: (await uow.outbox.get_for_request(rid))[0]
                    for rid in ("req-slow", "req-fast")
                }
                requests = await uow.requests.get_many(["req-slow", "req-fast"])
                trail = [e.kind for e in await uow.events.list_for("req-fast")]
        finally:
            await deps.database.dispose()
    assert {d.state for d in stored.values()} == {DeliveryState.DELIVERED}
    assert {d.attempts for d in stored.values()} == {1}
    assert {r.revision for r in requests.values()} == {1}  # the cards show "pipeline notified"
    assert trail == ["callback.delivered"]
    assert woken == ["announce"]
    assert fast.received[0].headers["webhook-id"] == "dlv-b-fast"
