"""Decisions receivers can trust: callbacks signed with Quorum's own Ed25519 key (`v1a`), the
public key at `GET /api/v1/keys`, the runnable receiver example, and webhook timestamps that
overflow a datetime answered 401 with nothing stored."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml

from bot.pipelines.base import SignatureError
from bot.pipelines.callback_keys import Ed25519Verifier
from bot.pipelines.signing import StandardWebhookSigner, StandardWebhookVerifier
from handlers.action_ids import ActionId
from tests.e2e.harness import (
    CALLBACK_KEY,
    CALLBACK_PUBLIC_KEY,
    POLICY,
    WEBHOOK_SECRET,
    Env,
    body_for,
    running_env,
)
from tests.fakes.gitlab_api import API_TOKEN as GITLAB_API_TOKEN
from tests.fakes.gitlab_api import FakeGitLab
from tests.paths import EXAMPLE_POLICY, FIXTURES, REPO

APPROVER = "U0WEB2"  # staging needs one owner approval; U0WEB1 is the requester
GITLAB_SIGNING = "whsec_Z2l0bGFiIHNpZ25pbmcgc2VjcmV0IGZvciBlMmU="
OVERFLOWING = ["999999999999", "253402300800", "-99999999999999", "1e309", "nan", "9" * 400]
EXAMPLE = REPO / "examples" / "verify_callback.py"


async def _keys(env: Env) -> tuple[int, dict[str, Any]]:
    assert env.quorum.http is not None
    async with env.quorum.http.get(f"{env.quorum.url}/api/v1/keys") as resp:  # no token
        return resp.status, await resp.json()


async def _decide(env: Env, callback_url: str) -> str:
    status, data = await env.quorum.webhook(
        body_for(environment="staging", callback_url=callback_url)
    )
    assert status == 202, data
    request_id = str(data["id"])
    await env.card_of(request_id)
    status, _ = await env.quorum.click(ActionId.approve, APPROVER, request_id)
    assert status == 200
    return request_id


async def test_keys_endpoint_serves_the_public_key_without_a_token(env: Env) -> None:
    status, document = await _keys(env)
    assert status == 200
    assert document == {
        "keys": [
            {
                "key_id": CALLBACK_KEY.public.key_id,
                "algorithm": "ed25519",
                "signature_version": "v1a",
                "public_key": CALLBACK_PUBLIC_KEY,
                "created": "2026-01-01T00:00:00Z",
            }
        ]
    }
    assert "whsk_" not in json.dumps(document)
    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    schema = {"$ref": "#/components/schemas/CallbackKeys", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(document)


async def test_the_callback_verifies_with_the_published_key_and_not_the_webhook_secret(
    env: Env,
) -> None:
    _, document = await _keys(env)
    published = [key["public_key"] for key in document["keys"]]
    env.pipeline.public_keys = published  # the receiver trusts what /api/v1/keys published
    request_id = await _decide(env, env.pipeline.url)

    [callback] = await env.pipeline.wait_for(1)
    assert callback.body["request_id"] == request_id
    assert callback.body["decision"] == "approved"
    entries = callback.headers["webhook-signature"].split()
    assert [entry.split(",")[0] for entry in entries] == ["v1a"]  # no v1 at all
    now = env.quorum.clock.now
    assert Ed25519Verifier(published, clock=now).verify(callback.raw, callback.headers)
    with pytest.raises(SignatureError, match="no well-formed v1 signature"):
        StandardWebhookVerifier([WEBHOOK_SECRET], clock=now).verify(callback.raw, callback.headers)
    # A forger holding the webhook secret cannot make a callback the receiver accepts.
    forged = StandardWebhookSigner(WEBHOOK_SECRET).sign("dlv_forged", now(), callback.raw)
    with pytest.raises(SignatureError):
        Ed25519Verifier(published, clock=now).verify(callback.raw, forged)
    assert env.pipeline.rejected_signatures == 0


async def _nothing_stored(env: Env) -> None:
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert list(await uow.requests.list_open()) == []
    assert env.slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("stamp", OVERFLOWING)
async def test_overflowing_generic_timestamps_are_401_and_store_nothing(
    env: Env, stamp: str
) -> None:
    raw = json.dumps(body_for()).encode()
    headers = StandardWebhookSigner(WEBHOOK_SECRET).sign(
        "msg_overflow", env.quorum.clock.now(), raw
    )
    headers["webhook-timestamp"] = stamp
    headers["content-type"] = "application/json"
    assert env.quorum.http is not None
    async with env.quorum.http.post(
        f"{env.quorum.url}/webhooks/generic", data=raw, headers=headers
    ) as resp:
        assert resp.status == 401
        assert "webhook-timestamp" in (await resp.json())["error"]
    await _nothing_stored(env)


@pytest.fixture
async def gitlab_env(db_url: str) -> AsyncIterator[Env]:
    policy: dict[str, Any] = json.loads(json.dumps(POLICY))
    policy["environments"]["production"]["require_change_ticket"] = False
    async with FakeGitLab() as gitlab:
        settings = {
            "GITLAB_WEBHOOK_SIGNING_SECRET": GITLAB_SIGNING,
            "GITLAB_URL": gitlab.base_url,
            "GITLAB_TOKEN": GITLAB_API_TOKEN,
        }
        async with running_env(db_url, policy=policy, extra_settings=settings) as env:
            yield env


async def test_overflowing_gitlab_timestamps_are_401_and_store_nothing(gitlab_env: Env) -> None:
    env = gitlab_env
    hook: dict[str, Any] = json.loads((FIXTURES / "gitlab" / "deployment_event.json").read_text())
    hook["project"]["path_with_namespace"] = "acme/storefront"
    hook.update({"status": "blocked", "environment": "production"})
    raw = json.dumps(hook).encode()
    assert env.quorum.http is not None
    for stamp in OVERFLOWING:
        headers = StandardWebhookSigner(GITLAB_SIGNING).sign(
            "msg_gl_overflow", env.quorum.clock.now(), raw
        )
        headers.update(
            {
                "webhook-timestamp": stamp,
                "X-Gitlab-Event": "Deployment Hook",
                "Content-Type": "application/json",
            }
        )
        async with env.quorum.http.post(
            f"{env.quorum.url}/webhooks/gitlab", data=raw, headers=headers
        ) as resp:
            assert resp.status == 401, stamp
    await _nothing_stored(env)
    # The same hook with its real timestamp is accepted: the 401s were the timestamps'.
    headers = StandardWebhookSigner(GITLAB_SIGNING).sign("msg_gl_ok", env.quorum.clock.now(), raw)
    headers.update({"X-Gitlab-Event": "Deployment Hook", "Content-Type": "application/json"})
    async with env.quorum.http.post(
        f"{env.quorum.url}/webhooks/gitlab", data=raw, headers=headers
    ) as resp:
        assert resp.status == 202


class _Receiver:
    """examples/verify_callback.py running as a process: what a receiver would deploy."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> _Receiver:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        first = await self.line()
        assert first.startswith("listening on "), first
        self.url = first.removeprefix("listening on ").strip() + "callback"
        return self

    async def line(self, timeout: float = 15.0) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:  # the example exited: show why
            assert self.process.stderr is not None
            raise AssertionError((await self.process.stderr.read()).decode())
        return raw.decode()

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_the_example_receiver_verifies_a_real_callback_with_the_keys_url(env: Env) -> None:
    async with _Receiver("--keys-url", f"{env.quorum.url}/api/v1/keys") as receiver:
        request_id = await _decide(env, receiver.url)
        line = json.loads(await receiver.line())
    assert line["verified"] is True
    assert line["request_id"] == request_id
    assert line["decision"] == "approved"
    assert line["webhook_id"].startswith("dlv_")


async def test_the_example_receiver_verifies_v1_with_the_callback_secret_only() -> None:
    callback_secret = "whsec_" + "Y2FsbGJhY2sgc2VjcmV0IGZvciB0aGUgZXhhbXBsZQ=="
    body = json.dumps({"type": "approval.decided", "request_id": "req_1", "decision": "approved"})
    async with (
        _Receiver("--secret", callback_secret) as receiver,
        aiohttp.ClientSession() as http,
    ):
        for secret, expected in ((WEBHOOK_SECRET, 401), (callback_secret, 204)):
            headers = StandardWebhookSigner(secret).sign(
                "dlv_example", datetime.now(UTC), body.encode()
            )
            async with http.post(receiver.url, data=body, headers=headers) as resp:
                assert resp.status == expected
            line = json.loads(await receiver.line())
            assert line["verified"] is (expected == 204)


def test_dev_serve_makes_an_ephemeral_key_and_logs_its_public_key(tmp_path: Path) -> None:
    """`make run` (QUORUM_DEV=1, no key configured) still starts; the key it signs with is the
    one it logs and serves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORUM_", "SLACK_"))}
    env.update(
        QUORUM_DEV="1",
        QUORUM_PORT=str(port),
        QUORUM_CONFIG=str(EXAMPLE_POLICY),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}",
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        document: dict[str, Any] | None = None
        while document is None and time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/api/v1/keys"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    document = json.load(resp)
            except OSError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
        assert document is not None, "no answer"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    [key] = document["keys"]
    text = log.read_text()
    assert f"ephemeral Ed25519 key {key['key_id']}, public key {key['public_key']}" in text
    assert "whsk_" not in text
