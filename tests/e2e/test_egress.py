"""The egress policy end to end: URLs a webhook names are checked at intake (422 naming the
field, nothing stored) and again at connect time (a name that resolves to 127.0.0.1 then is
refused before any connection); a receiver's answer is recorded by status code only, so
nothing it says reaches the card, the status API or the audit trail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from handlers.action_ids import ActionId
from tests.e2e.harness import API_TOKEN, SRE, Env, body_for, running_env
from tests.fakes.dns import FakeDns

APPROVERS = ("U0WEB2", "U0WEB3", SRE[0])
REBOUND = "callbacks.example.com"  # public-looking; the fake DNS answers 127.0.0.1
SECRET_LOOKING = "ghp_R3adBackChannelSecret0123456789abcdef"


@pytest.fixture
async def strict(db_url: str) -> AsyncIterator[Env]:
    """Quorum with the default policy (public addresses only) and a fake DNS that rebinds."""
    dns = FakeDns({REBOUND: ["127.0.0.1"]})
    async with running_env(
        db_url, extra_settings={"QUORUM_EGRESS_ALLOW": ""}, egress_resolver=dns
    ) as env:
        yield env


async def _nothing_recorded(env: Env) -> None:
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert list(await uow.requests.list_open()) == []
    assert env.slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(
    ("callback_url", "reason"),
    [
        ("http://127.0.0.1:8500/v1/kv", "127.0.0.1 is a loopback address"),
        ("http://10.0.0.5:8500/v1/kv/secrets", "10.0.0.5 is a private address"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("https://[fd00:ec2::254]/latest/", "cloud metadata address"),
        ("https://100.100.100.200/latest/", "cloud metadata address"),
        ("https://[::1]/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:8500/", "loopback address"),
        ("https://[fe80::1]/", "link-local address"),
        ("https://224.0.0.1/", "multicast address"),
        ("https://100.64.0.9/", "shared (CGNAT) address"),
        ("http://2130706433/", "four decimal numbers"),
        ("http://0x7f.1/", "four decimal numbers"),
        ("https://localhost./hook", "loopback name"),
        ("http://allowed.example@127.0.0.1/", "must not carry credentials"),
        (f"http://{REBOUND}/hook", "must use https"),
    ],
)
async def test_intake_refuses_a_callback_url_with_422_and_stores_nothing(
    strict: Env, callback_url: str, reason: str
) -> None:
    status, data = await strict.quorum.webhook(body_for(callback_url=callback_url))
    assert status == 422, data
    [field] = data["fields"]
    assert field["field"] == "callback_url"
    assert reason in field["message"]
    await _nothing_recorded(strict)


class ConnectionCounter:
    """A TCP listener on loopback that counts connections and answers nothing."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ConnectionCounter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


async def _decide(env: Env, callback_url: str) -> str:
    status, data = await env.quorum.webhook(body_for(callback_url=callback_url))
    assert status == 202, data
    request_id = str(data["id"])
    await env.card_of(request_id)
    for user in APPROVERS:
        status, _ = await env.quorum.click(ActionId.approve, user, request_id)
        assert status == 200
    return request_id


def _card_says(request_id: str, text: str) -> Any:
    def matches(call: Any) -> bool:
        blocks = json.dumps(call.args.get("blocks", ""), ensure_ascii=False)
        return request_id in json.dumps(call.args) and text in blocks

    return matches


async def _trail(env: Env, request_id: str) -> str:
    assert env.quorum.http is not None
    async with env.quorum.http.get(
        f"{env.quorum.url}/api/v1/requests/{request_id}/events",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_a_name_rebound_to_loopback_is_refused_at_connect_time(strict: Env) -> None:
    async with ConnectionCounter() as receiver:
        request_id = await _decide(strict, f"https://{REBOUND}:{receiver.port}/callback")
        reason = (
            f"refused by the egress policy at connect time: {REBOUND} resolves to a loopback "
            "address (permanent, not retried)"
        )
        await strict.slack.wait_for("chat.update", _card_says(request_id, reason), timeout=10)
        assert receiver.connections == 0
    _, data = await strict.quorum.status(request_id)
    assert data["callback"]["state"] == "failed"
    assert data["callback"]["attempts"] == 1
    assert data["callback"]["last_error"] == reason
    assert "127.0.0.1" not in json.dumps(data["callback"])
    assert reason in await _trail(strict, request_id)
    assert strict.pipeline.received == []


async def test_a_name_listed_explicitly_may_resolve_to_loopback(db_url: str) -> None:
    """The control for the test above: the fake DNS is what the callbacks connect with."""
    dns = FakeDns({REBOUND: ["127.0.0.1"]})
    settings = {"QUORUM_EGRESS_ALLOW": REBOUND}
    async with running_env(db_url, extra_settings=settings, egress_resolver=dns) as env:
        port = env.pipeline.url.split(":")[2].split("/")[0]
        await _decide(env, f"http://{REBOUND}:{port}/callback")
        [callback] = await env.pipeline.wait_for(1)
        assert callback.body["decision"] == "approved"
        assert REBOUND in dns.asked


class Receiver:
    """A callback receiver on loopback answering every POST with one status and body."""

    def __init__(self, status: int, text: str = "", location: str | None = None) -> None:
        self.status, self.text, self.location = status, text, location
        self.posts: list[str] = []
        self.followed: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Receiver:
        app = web.Application()

        async def callback(request: web.Request) -> web.Response:
            self.posts.append(request.path)
            headers = {"Location": self.location} if self.location else None
            return web.Response(status=self.status, text=self.text, headers=headers)

        async def elsewhere(request: web.Request) -> web.Response:
            self.followed.append(request.path)
            return web.Response(status=204)

        app.router.add_post("/callback", callback)
        app.router.add_route("*", "/elsewhere", elsewhere)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_receivers_body_is_never_shown(env: Env) -> None:
    body = f"not found; internal token={SECRET_LOOKING} at 10.0.0.5:8500"
    async with Receiver(404, body) as receiver:
        request_id = await _decide(env, f"{receiver.url}/callback")
        reason = "receiver refused the callback (HTTP 404) (permanent, not retried)"
        await env.slack.wait_for("chat.update", _card_says(request_id, reason), timeout=10)
        assert receiver.posts == ["/callback"]
    _, data = await env.quorum.status(request_id)
    assert data["callback"]["last_error"] == reason
    assert data["callback"]["state"] == "failed"
    trail = await _trail(env, request_id)
    assert reason in trail
    for leaked in (SECRET_LOOKING, "not found", "10.0.0.5"):
        assert leaked not in json.dumps(data)
        assert leaked not in trail
        assert not any(leaked in json.dumps(call.args) for call in env.slack.calls)


async def test_a_redirect_is_a_permanent_failure_and_is_not_followed(env: Env) -> None:
    async with Receiver(302) as receiver:
        receiver.location = f"{receiver.url}/elsewhere"
        request_id = await _decide(env, f"{receiver.url}/callback")
        reason = (
            "receiver answered with a redirect (HTTP 302); Quorum does not follow redirects "
            "(permanent, not retried)"
        )
        await env.slack.wait_for("chat.update", _card_says(request_id, reason), timeout=10)
        assert receiver.posts == ["/callback"]
        assert receiver.followed == []
    _, data = await env.quorum.status(request_id)
    assert (data["callback"]["state"], data["callback"]["attempts"]) == ("failed", 1)
    assert data["callback"]["last_error"] == reason


async def test_a_jenkins_input_url_outside_jenkins_url_is_refused(db_url: str) -> None:
    jenkins = {
        "JENKINS_URL": "https://jenkins.example.com/ci/",
        "JENKINS_USER": "quorum-bot",
        "JENKINS_API_TOKEN": "11aa22bb33cc44dd55ee66ff77aa88bb99",
    }
    async with running_env(db_url, extra_settings=jenkins) as env:
        for elsewhere in (
            "http://127.0.0.1:9/job/x/1/input/Q/",
            "https://jenkins.example.com/other/job/x/1/input/Q/",
            "https://jenkins.example.com.evil.example/ci/job/x/1/input/Q/",
            # the client resolves dot segments before sending: these leave /ci/
            "https://jenkins.example.com/ci/../other/job/x/1/input/Q/",
            "https://jenkins.example.com/ci/%2e%2e/other/job/x/1/input/Q/",
            "https://jenkins.example.com/ci/job/..%2Fother/input/Q/",
            "https://quorum@jenkins.example.com/ci/job/x/1/input/Q/",
        ):
            status, data = await env.quorum.webhook(body_for(jenkins={"input_url": elsewhere}))
            assert status == 422, data
            [field] = data["fields"]
            assert field["field"] == "jenkins.input_url"
            assert "JENKINS_URL" in field["message"]
            assert jenkins["JENKINS_API_TOKEN"] not in json.dumps(data)
        await _nothing_recorded(env)
        under = "https://jenkins.example.com/ci/job/deploy/7/input/Q/"
        status, data = await env.quorum.webhook(body_for(jenkins={"input_url": under}))
        assert status == 202, data
