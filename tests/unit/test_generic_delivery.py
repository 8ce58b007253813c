"""The generic adapter delivering `approval.decided` to a real HTTP endpoint on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.domain.model import Delivery
from bot.pipelines.base import SignatureError
from bot.pipelines.egress import EgressPolicy
from bot.pipelines.generic import GenericAdapter
from bot.pipelines.signing import StandardWebhookSigner, StandardWebhookVerifier
from bot.ports import DeliveryResult

NOW = datetime(2025, 3, 4, 10, 20, 11, tzinfo=UTC)
CALLBACK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = {"type": "approval.decided", "request_id": "req_1", "decision": "approved"}
LOOPBACK = EgressPolicy.parse("127.0.0.1")  # the fake receivers listen on 127.0.0.1 over http


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    webhook_id: str | None  # None: the signature did not verify


@dataclass
class FakePipeline:
    """A pipeline's callback endpoint: verifies the signature, answers from a script."""

    clock: Callable[[], datetime]
    script: list[tuple[int, str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hang: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verifier = StandardWebhookVerifier([CALLBACK_SECRET], clock=self.clock)
        try:
            webhook_id: str | None = verifier.verify(body, request.headers)
        except SignatureError:
            webhook_id = None
        self.received.append(Received(dict(request.headers), body, webhook_id))
        if self.hang is not None:
            await self.hang.wait()
        if webhook_id is None:
            return web.Response(status=401, text="bad signature")
        status, text = self.script.pop(0) if self.script else (200, "")
        headers = {"Location": "https://elsewhere.example/"} if 300 <= status < 400 else None
        return web.Response(status=status, text=text, headers=headers)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def __call__(self) -> datetime:
        return self.current


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def pipeline(clock: Clock) -> AsyncIterator[tuple[FakePipeline, str]]:
    fake = FakePipeline(clock=clock)
    app = web.Application()
    app.router.add_post("/hooks/quorum", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield fake, str(server.make_url("/hooks/quorum?token=pipeline-token"))
    finally:
        if fake.hang is not None:
            fake.hang.set()
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def adapter(
    session: aiohttp.ClientSession | Callable[[], aiohttp.ClientSession],
    clock: Clock,
    timeout: float = 10.0,
) -> GenericAdapter:
    return GenericAdapter(
        verifier=StandardWebhookVerifier([CALLBACK_SECRET], clock=clock),
        signer=StandardWebhookSigner(CALLBACK_SECRET),
        http=session,
        clock=clock,
        timeout=timeout,
        egress=LOOPBACK,
    )


def delivery(url: str | None, delivery_id: str = "dlv_1") -> Delivery:
    payload: dict[str, Any] = {"body": BODY}
    if url is not None:
        payload["url"] = url
    return Delivery(
        id=delivery_id,
        request_id="req_1",
        target="generic",
        payload=payload,
        created_at=NOW,
        next_attempt_at=NOW,
    )


async def test_503_then_200_with_the_same_webhook_id(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    fake.script = [(503, "busy"), (200, "ok")]
    quorum = adapter(session, clock)
    target = delivery(url)

    first = await quorum.deliver(target)
    clock.current = NOW + timedelta(minutes=7)  # a retry after backoff: fresh timestamp
    second = await quorum.deliver(target)

    assert first == DeliveryResult(
        ok=False, detail="receiver is unavailable (HTTP 503)", permanent=False
    )
    assert second == DeliveryResult(ok=True, detail="HTTP 200")
    assert [r.webhook_id for r in fake.received] == ["dlv_1", "dlv_1"]
    assert [r.headers["webhook-timestamp"] for r in fake.received] == [
        str(int(NOW.timestamp())),
        str(int((NOW + timedelta(minutes=7)).timestamp())),
    ]
    for received in fake.received:
        assert received.headers["Content-Type"] == "application/json"
        assert json.loads(received.body) == BODY


async def test_410_is_permanent_and_its_body_is_never_shown(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    fake.script = [(410, "run finished\n   long ago " + "x" * 500)]
    result = await adapter(session, clock).deliver(delivery(url))
    assert not result.ok
    assert result.permanent
    assert result.detail == "receiver refused the callback (HTTP 410) (permanent, not retried)"
    assert "pipeline-token" not in result.detail


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 504])
async def test_transient_statuses_are_retryable(
    pipeline: tuple[FakePipeline, str],
    session: aiohttp.ClientSession,
    clock: Clock,
    status: int,
) -> None:
    fake, url = pipeline
    fake.script = [(status, "later")]
    result = await adapter(session, clock).deliver(delivery(url))
    assert (result.ok, result.permanent) == (False, False)
    assert result.detail.endswith(f"(HTTP {status})")
    assert "later" not in result.detail


@pytest.mark.parametrize(("status", "text"), [(400, ""), (404, "no such run"), (422, "nope")])
async def test_other_4xx_are_permanent(
    pipeline: tuple[FakePipeline, str],
    session: aiohttp.ClientSession,
    clock: Clock,
    status: int,
    text: str,
) -> None:
    fake, url = pipeline
    fake.script = [(status, text)]
    result = await adapter(session, clock).deliver(delivery(url))
    expected = f"receiver refused the callback (HTTP {status}) (permanent, not retried)"
    assert result == DeliveryResult(ok=False, detail=expected, permanent=True)


async def test_redirects_are_not_followed(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    fake.script = [(307, "")]
    result = await adapter(session, clock).deliver(delivery(url))
    assert result == DeliveryResult(
        ok=False,
        detail="receiver answered with a redirect (HTTP 307); Quorum does not follow redirects "
        "(permanent, not retried)",
        permanent=True,
    )
    assert len(fake.received) == 1


async def test_receiver_with_another_secret_rejects_the_signature(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    other = GenericAdapter(
        verifier=StandardWebhookVerifier([CALLBACK_SECRET], clock=clock),
        signer=StandardWebhookSigner("whsec_c29tZSBvdGhlciBjYWxsYmFjayBzZWNyZXQ="),
        http=session,
        clock=clock,
        egress=LOOPBACK,
    )
    result = await other.deliver(delivery(url))
    assert result == DeliveryResult(
        ok=False,
        detail="receiver refused the callback (HTTP 401) (permanent, not retried)",
        permanent=True,
    )
    assert fake.received[0].webhook_id is None


async def test_connection_refused_is_retryable(
    session: aiohttp.ClientSession, clock: Clock
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe socket is closed.
    result = await adapter(session, clock).deliver(delivery(f"http://127.0.0.1:{port}/hook"))
    assert result == DeliveryResult(
        ok=False, detail="cannot connect to 127.0.0.1: connection refused", permanent=False
    )


async def test_timeout_is_retryable(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    fake.hang = asyncio.Event()
    result = await adapter(session, clock, timeout=0.05).deliver(delivery(url))
    assert result == DeliveryResult(ok=False, detail="timed out after 0.05 s", permanent=False)


async def test_no_callback_url_means_the_pipeline_polls(
    session: aiohttp.ClientSession, clock: Clock
) -> None:
    result = await adapter(session, clock).deliver(delivery(None))
    assert result == DeliveryResult(ok=True, detail="no callback_url; pipeline polls")


async def test_session_can_be_provided_lazily(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    result = await adapter(lambda: session, clock).deliver(delivery(url, "dlv_lazy"))
    assert result.ok
    assert fake.received[0].webhook_id == "dlv_lazy"


async def test_a_delivery_without_a_body_is_a_permanent_failure(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    broken = delivery(url)
    broken.payload = {"url": url}
    result = await adapter(session, clock).deliver(broken)
    assert result == DeliveryResult(ok=False, detail="delivery has no body", permanent=True)
    assert fake.received == []


async def test_without_a_signer_callbacks_fail_rather_than_go_unsigned(
    pipeline: tuple[FakePipeline, str], session: aiohttp.ClientSession, clock: Clock
) -> None:
    fake, url = pipeline
    unsigned = GenericAdapter(
        verifier=StandardWebhookVerifier([CALLBACK_SECRET], clock=clock),
        signer=None,
        http=session,
        clock=clock,
        egress=LOOPBACK,
    )
    result = await unsigned.deliver(delivery(url))
    assert result == DeliveryResult(
        ok=False, detail="no callback signing key or secret configured", permanent=True
    )
    assert fake.received == []
    assert (await unsigned.deliver(delivery(None))).ok  # polling needs no secret


def test_adapter_repr_hides_the_secrets(clock: Clock) -> None:
    async_session: Any = object()
    text = repr(adapter(async_session, clock))
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in text
    assert "redacted" in text
