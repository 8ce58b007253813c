"""Helpers for the slash-command end-to-end tests: signed form-encoded commands (the wire format
of shared/fixtures/slack/slash_command.txt), the break-glass modal, and the message queue."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import select

from bot.domain.model import ApprovalRequest
from handlers.action_ids import REASON_ACTION_ID, BlockId, CallbackId, encode_button_value
from storage.db import create_engine
from storage.tables import MessageRow
from tests.e2e.harness import POLICY, Env, _fixture, running_env, unique_stamp
from tests.paths import FIXTURES

RM_1, RM_2 = "U0RM1", "U0RM2"
OWNER_1, OWNER_2, OWNER_3 = "U0WEB1", "U0WEB2", "U0WEB3"  # U0WEB1 requests (octo-web)

GLASS_POLICY: dict[str, Any] = copy.deepcopy(POLICY)
GLASS_POLICY["break_glass"] = {
    "allowed": "release-managers",
    "requires_reason": True,
    "extra_rules": [{"name": "second-release-manager", "from": "release-managers", "approvals": 1}],
    "review_within": "72h",
}
GLASS_POLICY["freezes"] = [
    {
        "name": "quarter-end",
        "environments": ["production"],
        "cron": "0 18 28 3,6,9,12 *",
        "zone": "Europe/London",
        "duration": "96h",
        "reason": "Quarter-end financial close",
    }
]


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    public: bool


def command_form(command: str, user: str, text: str, channel: str = "C0WEB") -> dict[str, str]:
    """The fixture's slash-command form with our command, user, text and channel."""
    raw = (FIXTURES / "slack" / "slash_command.txt").read_text().strip()
    form = dict(parse_qsl(raw, keep_blank_values=True))
    form.update(
        command=command,
        text=text,
        user_id=user,
        user_name=user.lower(),
        channel_id=channel,
        trigger_id=f"trigger-{user}-{unique_stamp()}",  # unique, as Slack makes it
    )
    return form


async def command(env: Env, command: str, user: str, text: str) -> Reply:
    status, body = await env.quorum.slack_post(command_form(command, user, text))
    data = json.loads(body) if body else {}
    return Reply(status, str(data.get("text", "")), data.get("response_type") == "in_channel")


def break_glass_submission(user: str, request_id: str, reason: str) -> dict[str, str]:
    payload = _fixture("view_submission.json")
    payload["user"] = {**payload["user"], "id": user}
    payload["trigger_id"] = unique_stamp()
    view = payload["view"]
    view["callback_id"] = CallbackId.break_glass_reason.value
    view["private_metadata"] = encode_button_value(request_id)
    view["state"] = {
        "values": {
            BlockId.reason.value: {REASON_ACTION_ID: {"type": "plain_text_input", "value": reason}}
        }
    }
    return {"payload": json.dumps(payload)}


@asynccontextmanager
async def glass_env(db_url: str) -> AsyncIterator[Env]:
    async with running_env(db_url, policy=GLASS_POLICY) as env:
        yield env


async def queued(db_url: str) -> list[dict[str, Any]]:
    """Every row of the durable Slack message queue (read directly: the test is the observer)."""
    engine = create_engine(db_url)
    columns = (MessageRow.channel, MessageRow.dm, MessageRow.text, MessageRow.dedupe_key)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(*columns).order_by(MessageRow.created_at))).all()
    finally:
        await engine.dispose()
    return [dict(row._mapping) for row in rows]


async def stored(env: Env, request_id: str) -> ApprovalRequest:
    async with env.quorum.deps.database.unit_of_work() as uow:
        request: ApprovalRequest | None = await uow.requests.get(request_id)
    assert request is not None
    return request


async def card_synced(env: Env, request_id: str, timeout: float = 5.0) -> ApprovalRequest:
    """The request once its posted card is recorded (the syncer commits just after posting)."""
    async with asyncio.timeout(timeout):
        # The syncer records the card in its own commit after posting it; nothing signals that
        # commit, so poll the condition (no timing depends on the interval).
        while (request := await stored(env, request_id)).message_ts is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return request


def blocks_text(call_args: dict[str, Any]) -> str:
    return json.dumps(call_args.get("blocks"), ensure_ascii=False)


def buttons(call_args: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for block in call_args.get("blocks") or []:
        if block.get("type") == "actions":
            found += [e["text"]["text"] for e in block["elements"]]
    return found


async def ephemeral_to(env: Env, user: str, contains: str) -> str:
    """The text of the latest ephemeral message to `user` that contains `contains`."""
    calls = await env.slack.wait_for(
        "chat.postEphemeral",
        lambda c: c.args.get("user") == user and contains in str(c.args.get("text")),
    )
    return str(calls[-1].args["text"])
