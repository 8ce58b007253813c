"""End-to-end harness: Quorum on a free port, a fake Slack, a fake pipeline, signed requests.

Everything talks real HTTP on 127.0.0.1. Tests wait for recorded calls; they never sleep.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver

from bot.app import RUNTIME, Intervals, build_app
from bot.clock import SystemClock
from bot.pipelines.callback_keys import CallbackKey, Ed25519Verifier
from bot.pipelines.signing import StandardWebhookSigner, StandardWebhookVerifier
from bot.policy import Policy
from bot.ports import Clock, Database, UnitOfWork
from bot.services.deps import Tuning
from bot.settings import Settings, load_settings
from handlers.action_ids import REASON_ACTION_ID, ActionId, BlockId, CallbackId, encode_button_value
from storage.migrate import upgrade
from tests.fakes.slack_api import APP_ID, TEAM_ID, FakeSlack

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
API_TOKEN = "e2e-api-token"
# Callbacks are signed with a key of their own (Ed25519, `v1a`), never with the webhook secret.
CALLBACK_KEY = CallbackKey.from_secret(
    "whsk_" + base64.b64encode(hashlib.sha256(b"quorum e2e callback key").digest()).decode(),
    datetime(2026, 1, 1, tzinfo=UTC),
)
CALLBACK_PUBLIC_KEY = CALLBACK_KEY.public.public_key

POLICY: dict[str, Any] = {
    "version": 1,
    "timezone": "UTC",
    "defaults": {"channel": "C0DEPLOYS", "unknown_service": "route"},
    "teams": {
        "web": {"channel": "C0WEB", "members": ["U0WEB1", "U0WEB2", "U0WEB3"]},
        "sre": {"channel": "C0SRE", "usergroup": "S0SRE"},
        "security": {"members": ["U0SEC1"]},
        "release-managers": {"members": ["U0RM1", "U0RM2"]},
    },
    "services": {
        "storefront": {"owner": "web", "repos": ["acme/storefront", "acme/storefront-*"]},
        "vault": {"owner": "web", "risk": "high"},
    },
    "environments": {
        "production": {
            "rules": [
                {"name": "owner-review", "from": "owner", "approvals": 2},
                {"name": "sre-signoff", "from": "sre", "approvals": 1},
            ],
            "reject": "any",
            "self_approval": False,
            "require_change_ticket": True,
        },
        "staging": {
            "rules": [{"name": "owner-review", "from": "owner", "approvals": 1}],
            "self_approval": True,
            "risk": "low",
        },
    },
    "risk": {
        "high": {"extra_rules": [{"name": "security-review", "from": "security", "approvals": 1}]}
    },
    "release_managers": "release-managers",
    "identities": {"github": {"octo-web": "U0WEB1"}, "email_lookup": True},
}
SRE = ["U0SRE1", "U0SRE2"]
# Stand-ins who are in no approving team: delegations to them are allowed by `delegation.to`.
DEPUTIES = ["U0OUT1", "U0OUT2"]
DEPUTIES_POLICY: dict[str, Any] = {
    **POLICY,
    "teams": {**POLICY["teams"], "deputies": {"members": DEPUTIES}},
    "delegation": {"to": "deputies"},
}


def body_for(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service": "storefront",
        "environment": "production",
        "version": "v1.4.2",
        "sha": "4f2c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e",
        "title": "Release storefront v1.4.2",
        "description": "Bumps the checkout flow.",
        "requested_by": {"github": "octo-web"},
        "links": [{"text": "Run", "url": "https://ci.example.com/runs/42"}],
        "change_ticket": "CHG-1234",
    }
    body.update(overrides)
    return body


@dataclass
class Callback:
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes = b""  # the body as signed


@dataclass
class FakePipeline:
    """Receives Quorum's signed callbacks; answers with the queued statuses, then 204."""

    statuses: list[int] = field(default_factory=list)
    received: list[Callback] = field(default_factory=list)
    rejected_signatures: int = 0
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""
    clock: Clock = field(default_factory=SystemClock)  # Quorum's clock: it signs with it
    # What the receiver trusts: Quorum's public key (`v1a`) and any shared callback secrets (`v1`)
    public_keys: list[str] = field(default_factory=lambda: [CALLBACK_PUBLIC_KEY])
    secrets: list[str] = field(default_factory=list)

    def verifiers(self) -> list[Ed25519Verifier | StandardWebhookVerifier]:
        now = self.clock.now
        found: list[Ed25519Verifier | StandardWebhookVerifier] = []
        if self.public_keys:
            found.append(Ed25519Verifier(self.public_keys, clock=lambda: now()))
        if self.secrets:
            found.append(StandardWebhookVerifier(self.secrets, clock=lambda: now()))
        return found

    async def start(self) -> None:
        app = web.Application()

        def verified(raw: bytes, headers: Any) -> bool:
            for verifier in self.verifiers():
                try:
                    verifier.verify(raw, headers)
                except Exception:  # noqa: S112 - try the next trusted key
                    continue
                return True
            return False

        async def receive(request: web.Request) -> web.Response:
            raw = await request.read()
            if not verified(raw, request.headers):
                self.rejected_signatures += 1
                return web.Response(status=401)
            status = self.statuses.pop(0) if self.statuses else 204
            async with self._cond:
                self.received.append(Callback(dict(request.headers), json.loads(raw), raw))
                self._cond.notify_all()
            return web.Response(status=status)

        app.router.add_post("/callback", receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/callback"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Callback]:
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(lambda: len(self.received) >= count)
        return list(self.received)


class Quorum:
    """A running Quorum plus signed-request helpers."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        tuning: Tuning,
        clock: Clock | None = None,
        egress_resolver: AbstractResolver | None = None,
    ) -> None:
        self.egress_resolver = egress_resolver  # names of webhook-named URLs (a fake DNS)
        self.settings = settings
        self.policy = policy
        self.tuning = tuning
        self.clock: Clock = clock or SystemClock()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.http: aiohttp.ClientSession | None = None
        self.app: web.Application | None = None

    async def start(self) -> None:
        self.app = build_app(
            self.settings,
            self.policy,
            clock=self.clock,
            tuning=self.tuning,
            intervals=Intervals(announce=0.2, deliveries=0.2),
            egress_resolver=self.egress_resolver,
        )
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.runner = None

    @property
    def deps(self) -> Any:
        assert self.app is not None
        return self.app[RUNTIME].deps

    # --- pipelines --------------------------------------------------------------------------

    async def webhook(
        self,
        body: dict[str, Any] | bytes,
        *,
        webhook_id: str | None = None,
        secret: str = WEBHOOK_SECRET,
        at: datetime | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        wid = webhook_id or f"msg_{hashlib.sha256(raw).hexdigest()[:20]}"
        headers = StandardWebhookSigner(secret).sign(wid, at or self.clock.now(), raw)
        headers["content-type"] = "application/json"
        assert self.http is not None
        async with self.http.post(
            f"{self.url}/webhooks/generic", data=raw, headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def status(self, request_id: str, token: str = API_TOKEN) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        async with self.http.get(
            f"{self.url}/api/v1/requests/{request_id}", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    # --- Slack ------------------------------------------------------------------------------

    async def slack_post(
        self, form: dict[str, str], *, secret: str = SIGNING_SECRET, ts: int | None = None
    ) -> tuple[int, str]:
        raw = urlencode(form).encode()
        return await self.slack_raw(raw, secret=secret, ts=ts)

    async def slack_raw(
        self,
        raw: bytes,
        *,
        secret: str = SIGNING_SECRET,
        ts: int | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> tuple[int, str]:
        stamp = str(ts if ts is not None else int(self.clock.now().timestamp()))
        base = f"v0:{stamp}:".encode() + raw
        signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
        headers = {
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature,
            "Content-Type": content_type,
        }
        assert self.http is not None
        async with self.http.post(f"{self.url}/slack/events", data=raw, headers=headers) as resp:
            return resp.status, await resp.text()

    async def click(
        self,
        action: ActionId,
        user: str,
        request_id: str,
        channel: str | None = None,
        message_ts: str | None = None,
        **fields: Any,
    ) -> tuple[int, str]:
        """A click on the request's card (its channel and message, once posted), unless
        `channel` / `message_ts` say otherwise; `fields` override top-level payload fields."""
        if channel is None or message_ts is None:
            card_channel, card_ts = await self.card_position(request_id)
            channel = channel or card_channel
            message_ts = message_ts or card_ts
        payload = block_action(action, user, request_id, channel, message_ts)
        payload.update(fields)
        return await self.slack_post({"payload": json.dumps(payload)})

    async def card_position(self, request_id: str, timeout: float = 5.0) -> tuple[str, str]:
        """Where the request's card is, waiting for it to be posted."""
        async with asyncio.timeout(timeout):
            while True:
                async with self.deps.database.unit_of_work(read_only=True) as uow:
                    stored = await uow.requests.get(request_id)
                if stored is not None and stored.message_ts is not None:
                    return stored.channel, stored.message_ts
                await asyncio.sleep(0.02)

    async def submit_reject(
        self, user: str, request_id: str, reason: str, **fields: Any
    ) -> tuple[int, str]:
        payload = view_submission(user, request_id, reason)
        payload.update(fields)
        return await self.slack_post({"payload": json.dumps(payload)})


# Slack makes every interaction unique (a click's action_ts, a trigger_id): two identical signed
# bodies are a replay, which Quorum answers without acting (bot/services/replays.py).
_INTERACTIONS = itertools.count(1)


def unique_stamp() -> str:
    """A fresh `action_ts`-like stamp for one interaction."""
    return f"1596530385.{next(_INTERACTIONS):06d}"


def _fixture(name: str) -> dict[str, Any]:
    from tests.paths import FIXTURES

    data = json.loads((FIXTURES / "slack" / name).read_text())
    assert isinstance(data, dict)
    return data


def _installed(payload: dict[str, Any]) -> None:
    """Point a fixture payload at the fake Slack's workspace and Quorum's app (the fixture's
    own T111 / A111 / E111 are another installation's)."""
    payload["team"] = {"id": TEAM_ID, "domain": "fake"}
    payload["api_app_id"] = APP_ID
    payload["user"] = {**payload["user"], "team_id": TEAM_ID}


def block_action(
    action: ActionId, user: str, request_id: str, channel: str, message_ts: str = "111.222"
) -> dict[str, Any]:
    """The bolt fixture payload (tests/fixtures/slack/block_actions.json) aimed at our card."""
    payload = _fixture("block_actions.json")
    payload["user"] = {**payload["user"], "id": user, "username": user.lower(), "name": user}
    _installed(payload)
    payload["channel"] = {"id": channel, "name": "deploys"}
    payload["container"] = {
        **payload["container"],
        "channel_id": channel,
        "message_ts": message_ts,
        "is_ephemeral": False,
    }
    payload["trigger_id"] = f"trigger-{user}-{request_id}"
    payload["actions"] = [
        {
            **payload["actions"][0],
            "action_id": action.value,
            "block_id": BlockId.actions.value,
            "value": encode_button_value(request_id),
            "action_ts": unique_stamp(),
        }
    ]
    return payload


def view_submission(user: str, request_id: str, reason: str) -> dict[str, Any]:
    """The bolt fixture view_submission payload carrying our rejection modal's state."""
    payload = _fixture("view_submission.json")
    payload["user"] = {**payload["user"], "id": user}
    payload["trigger_id"] = unique_stamp()
    _installed(payload)
    view = payload["view"]
    view["team_id"] = view["app_installed_team_id"] = TEAM_ID
    view["app_id"] = APP_ID
    view["callback_id"] = CallbackId.reject_reason.value
    view["private_metadata"] = encode_button_value(request_id)
    view["state"] = {
        "values": {
            BlockId.reason.value: {REASON_ACTION_ID: {"type": "plain_text_input", "value": reason}}
        }
    }
    return payload


@dataclass
class Env:
    quorum: Quorum
    slack: FakeSlack
    pipeline: FakePipeline
    db_url: str

    async def restart(self) -> None:
        await self.quorum.stop()
        self.quorum = Quorum(
            self.quorum.settings,
            self.quorum.policy,
            self.quorum.tuning,
            self.quorum.clock,
            self.quorum.egress_resolver,
        )
        await self.quorum.start()

    async def open(self, **overrides: Any) -> str:
        status, data = await self.quorum.webhook(
            body_for(callback_url=self.pipeline.url, **overrides)
        )
        assert status == 202, data
        request_id = str(data["id"])
        await self.card_of(request_id)
        return request_id

    async def card_of(self, request_id: str) -> dict[str, Any]:
        calls = await self.slack.wait_for(
            "chat.postMessage",
            lambda c: c.ok and request_id in json.dumps(c.args.get("blocks", "")),
        )
        return calls[0].args


@asynccontextmanager
async def running_env(
    db_url: str,
    *,
    policy: dict[str, Any] | None = None,
    tuning: Tuning | None = None,
    extra_settings: dict[str, str] | None = None,
    clock: Clock | None = None,
    egress_resolver: AbstractResolver | None = None,
) -> AsyncIterator[Env]:
    await upgrade(db_url)
    keys_dir = Path(tempfile.mkdtemp(prefix="quorum-e2e-keys-"))
    CALLBACK_KEY.write(keys_dir / "callback.key")
    pipeline = FakePipeline(clock=clock or SystemClock())
    await pipeline.start()
    async with FakeSlack() as slack:
        slack.set_usergroup("S0SRE", SRE)
        settings = load_settings(
            {
                "SLACK_BOT_TOKEN": slack.token,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.base_url,
                "QUORUM_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "QUORUM_API_TOKEN": API_TOKEN,
                "DATABASE_URL": db_url,
                # The fake receivers listen on loopback over http: allowed explicitly.
                "QUORUM_EGRESS_ALLOW": "127.0.0.1",
                "QUORUM_CALLBACK_SIGNING_KEY_FILE": str(keys_dir / "callback.key"),
                **(extra_settings or {}),
            }
        )
        quorum = Quorum(
            settings,
            Policy.from_mapping(policy or POLICY, "e2e-policy.yml"),
            tuning
            or Tuning(
                backoff_base=timedelta(milliseconds=50), backoff_cap=timedelta(milliseconds=200)
            ),
            clock,
            egress_resolver,
        )
        await quorum.start()
        env = Env(quorum=quorum, slack=slack, pipeline=pipeline, db_url=db_url)
        try:
            yield env
        finally:
            await env.quorum.stop()
            await pipeline.stop()
            shutil.rmtree(keys_dir, ignore_errors=True)


def tmp_sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'quorum.db'}"


def votes_in(calls: Sequence[Any]) -> list[str]:
    return [str(c.args.get("text", "")) for c in calls]


class CountingDatabase:
    """Our `Database` port, counting the units of work it hands out."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.reads = 0
        self.writes = 0

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        self.reads += int(read_only)
        self.writes += int(not read_only)
        return self.inner.unit_of_work(read_only=read_only)

    async def ping(self) -> None:
        await self.inner.ping()
