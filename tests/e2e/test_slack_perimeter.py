"""The Slack edge (`POST /slack/events`), end to end on SQLite and PostgreSQL: correctly signed
payloads of the wrong shape are refused naming the field and change nothing; a signed request
sent again gets the first answer and does nothing again, also at once, across a restart and
from another replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.app import RUNTIME
from bot.services.replays import REPLAY_RETENTION, SlackReplays, prune_slack_replays, replay_key
from handlers.action_ids import REASON_ACTION_ID, ActionId, BlockId
from tests.e2e.harness import SIGNING_SECRET, Env, block_action, view_submission
from tests.e2e.slash import OWNER_2, RM_1, command_form, stored

FORM = "application/x-www-form-urlencoded"


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


async def _votes(env: Env, request_id: str) -> list[str]:
    _, data = await env.quorum.status(request_id)
    return [v["user"] for v in data["votes"]]


async def _freezes(env: Env) -> int:
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        return len(await uow.freezes.list_current(env.quorum.clock.now()))


def _post_form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


async def _send(env: Env, raw: bytes, ts: int, content_type: str = FORM) -> tuple[int, str]:
    return await env.quorum.slack_raw(raw, ts=ts, content_type=content_type)


def _now(env: Env) -> int:
    return int(env.quorum.clock.now().timestamp())


# --- typed payloads ---------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    """A change to a payload: set (or, for `...`, delete) the value at the dotted path."""

    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = payload
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


CLICKS = [
    ("number for user.id", _set("user.id", 12345), "user.id"),
    ("list for actions[0].value", _set("actions.0.value", ["a", "b"]), "actions.0.value"),
    ("object for team", _set("team", "T0FAKE"), "team"),
    ("no team", _set("team", ...), "team"),
    ("no actions", _set("actions", []), "actions"),
    ("number for action_id", _set("actions.0.action_id", 7), "actions.0.action_id"),
    ("string for actions", _set("actions", "approve"), "actions"),
    ("list for channel.id", _set("channel.id", ["C0WEB"]), "channel.id"),
    ("number for message_ts", _set("container.message_ts", 111.222), "container.message_ts"),
    ("200-deep value", _set("actions.0.value", _nested(200)), "actions.0.value"),
    ("string for is_stranger", _set("is_stranger", "false"), "is_stranger"),
]


@pytest.mark.parametrize(
    ("change", "field"), [pytest.param(c, f, id=name) for name, c, f in CLICKS]
)
async def test_an_ill_typed_click_is_400_naming_the_field_and_changes_nothing(
    env: Env, change: Any, field: str
) -> None:
    request_id = await env.open()
    channel, ts = await env.quorum.card_position(request_id)
    before = await stored(env, request_id)
    calls = len(env.slack.calls)
    payload = block_action(ActionId.approve, OWNER_2, request_id, channel, ts)
    change(payload)

    status, text = await _send(env, _post_form(payload), _now(env))

    assert status == 400, text
    body = json.loads(text)
    assert body["error"] == "the interaction payload does not fit"
    assert field in [f["field"] for f in body["fields"]]
    assert body["correlation_id"]
    assert await _votes(env, request_id) == []
    assert (await stored(env, request_id)).revision == before.revision
    await asyncio.sleep(0.3)  # a listener would have talked to Slack after its ack
    asked = {c.method for c in env.slack.calls[calls:]}
    assert not asked & {"users.info", "chat.postEphemeral", "views.open"}


SRE_REJECTER = "U0SRE2"


def _reason_as(value: Any) -> Any:
    def change(payload: dict[str, Any]) -> None:
        payload["view"]["state"]["values"][BlockId.reason.value][REASON_ACTION_ID]["value"] = value

    return change


SUBMISSIONS = [
    ("no view.state", _set("view.state", ...), "view.state"),
    ("string for view.state.values", _set("view.state.values", "reason"), "view.state.values"),
    ("number for the reason", _reason_as(5), "view.state.values"),
    ("list for private_metadata", _set("view.private_metadata", ["x"]), "view.private_metadata"),
    ("no user", _set("user", ...), "user"),
]


@pytest.mark.parametrize(
    ("change", "field"), [pytest.param(c, f, id=name) for name, c, f in SUBMISSIONS]
)
async def test_an_ill_typed_submission_is_400_naming_the_field(
    env: Env, change: Any, field: str
) -> None:
    request_id = await env.open()
    payload = view_submission(SRE_REJECTER, request_id, "tests are red")
    change(payload)

    status, text = await _send(env, _post_form(payload), _now(env))

    assert status == 400, text
    fields = [f["field"] for f in json.loads(text)["fields"]]
    assert any(f.startswith(field) for f in fields), fields
    assert (await stored(env, request_id)).state.value == "pending"


async def test_a_signed_json_body_carrying_an_interaction_is_400(env: Env) -> None:
    request_id = await env.open()
    channel, ts = await env.quorum.card_position(request_id)
    payload = block_action(ActionId.approve, OWNER_2, request_id, channel, ts)

    status, text = await _send(
        env, json.dumps(payload).encode(), _now(env), content_type="application/json"
    )

    assert status == 400
    assert json.loads(text)["fields"][0]["field"] == "payload"
    assert await _votes(env, request_id) == []


async def test_deep_junk_in_a_field_quorum_does_not_read_is_ignored(env: Env) -> None:
    request_id = await env.open()
    channel, ts = await env.quorum.card_position(request_id)
    payload = block_action(ActionId.approve, OWNER_2, request_id, channel, ts)
    payload["junk"] = _nested(200)  # Slack adds fields; Quorum reads none of this one

    status, _ = await _send(env, _post_form(payload), _now(env))

    assert status == 200
    assert await _votes(env, request_id) == [OWNER_2]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(lambda f: f.pop("user_id"), "user_id", id="no user_id"),
        pytest.param(lambda f: f.update(user_id=""), "user_id", id="empty user_id"),
        pytest.param(lambda f: f.update(text="prod\u0000uction 2h x"), "text", id="NUL in text"),
    ],
)
async def test_a_command_that_does_not_fit_is_explained_ephemerally(
    env: Env, change: Any, field: str
) -> None:
    form = command_form("/freeze", RM_1, "production for 2h close")
    change(form)

    status, text = await env.quorum.slack_post(form)

    assert status == 200
    reply = json.loads(text)
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith("Quorum could not read this command (correlation id ")
    assert f"`{field}`" in reply["text"]
    assert await _freezes(env) == 0


async def test_a_command_as_a_signed_json_body_is_400(env: Env) -> None:
    form = command_form("/freeze", RM_1, "production for 2h close")

    status, text = await _send(
        env, json.dumps(form).encode(), _now(env), content_type="application/json"
    )

    assert status == 400
    assert json.loads(text)["fields"][0]["field"] == "command"
    assert await _freezes(env) == 0


async def test_a_command_mentioning_payload_is_read_as_a_command(env: Env) -> None:
    status, text = await env.quorum.slack_post(
        command_form("/freeze", RM_1, "production for 2h payload service broken")
    )

    assert status == 200
    assert "payload service broken" in json.loads(text)["text"]
    assert await _freezes(env) == 1


# --- replays ----------------------------------------------------------------------------------


async def test_the_same_signed_freeze_sent_six_times_freezes_once(env: Env) -> None:
    raw = urlencode(command_form("/freeze", RM_1, "production for 2h quarter-end close")).encode()
    ts = _now(env)

    answers = [await _send(env, raw, ts) for _ in range(6)]

    assert answers[0][0] == 200
    assert "froze deployments" in json.loads(answers[0][1])["text"]
    assert answers == [answers[0]] * 6
    assert await _freezes(env) == 1


async def test_six_identical_freezes_at_once_freeze_once(env: Env) -> None:
    raw = urlencode(command_form("/freeze", RM_1, "production for 2h quarter-end close")).encode()
    ts = _now(env)

    answers = await asyncio.gather(*(_send(env, raw, ts) for _ in range(6)))

    assert answers == [answers[0]] * 6
    assert "froze deployments" in json.loads(answers[0][1])["text"]
    assert await _freezes(env) == 1


async def test_the_same_signed_approve_click_twice_records_one_vote_and_answers_alike(
    env: Env,
) -> None:
    request_id = await env.open()
    channel, ts = await env.quorum.card_position(request_id)
    raw = _post_form(block_action(ActionId.approve, OWNER_2, request_id, channel, ts))
    stamp = _now(env)

    first = await _send(env, raw, stamp)
    second = await _send(env, raw, stamp)

    assert first[0] == 200
    assert second == first
    assert await _votes(env, request_id) == [OWNER_2]
    await asyncio.sleep(0.3)
    # a second vote would have been refused ("already voted") in an ephemeral message
    assert env.slack.calls_to("chat.postEphemeral") == []


async def test_a_replay_after_a_restart_gets_the_stored_answer(env: Env) -> None:
    raw = urlencode(command_form("/freeze", RM_1, "production for 2h quarter-end close")).encode()
    ts = _now(env)
    first = await _send(env, raw, ts)
    await env.restart()

    again = await _send(env, raw, ts)

    assert again == first
    assert await _freezes(env) == 1


async def test_a_request_another_replica_took_and_has_not_answered_is_409(env: Env) -> None:
    raw = urlencode(command_form("/freeze", RM_1, "production for 2h quarter-end close")).encode()
    ts = _now(env)
    signature = _signature(raw, ts)
    async with env.quorum.deps.database.unit_of_work() as uow:  # the other replica's claim
        await uow.slack_replays.claim_many([replay_key(str(ts), signature)], env.quorum.clock.now())
        await uow.commit()
    runtime = env.quorum.app[RUNTIME] if env.quorum.app else None
    assert runtime is not None
    runtime.replays = SlackReplays(runtime.database, env.quorum.clock, wait=0.2)

    status, text = await _send(env, raw, ts)

    assert status == 409
    assert json.loads(text)["error"] == "this Slack request is already being processed"
    assert await _freezes(env) == 0


async def test_taken_requests_are_forgotten_after_the_signature_window(env: Env) -> None:
    database, clock = env.quorum.deps.database, env.quorum.clock
    now = clock.now()
    async with database.unit_of_work() as uow:
        await uow.slack_replays.claim_many(["old"], now - REPLAY_RETENTION - timedelta(seconds=1))
        await uow.slack_replays.claim_many(["recent"], now - timedelta(minutes=5))
        await uow.commit()

    await prune_slack_replays(database, clock)  # the retention job may have run first: same code

    async with database.unit_of_work(read_only=True) as uow:
        left = await uow.slack_replays.answers(["old", "recent"])
    assert set(left) == {"recent"}


def _signature(raw: bytes, ts: int) -> str:
    base = f"v0:{ts}:".encode() + raw
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()
