"""The vote writer reuses what its previous batch read only while nothing else was committed:
a freeze or a revoked delegation written by another process (here: another connection to the
same database) between two votes is honoured by the next vote."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.model import Delegation, Freeze
from handlers.action_ids import ActionId
from storage.db import create_engine
from storage.uow import SqlDatabase
from tests.e2e.harness import Env
from tests.e2e.slash import OWNER_2, OWNER_3, RM_1, command, ephemeral_to

DELEGATE = "U0OUT2"


async def _votes(env: Env, request_id: str) -> list[dict[str, object]]:
    _, data = await env.quorum.status(request_id)
    return list(data["votes"])


async def test_a_freeze_from_another_process_stops_the_next_approval(env: Env) -> None:
    request_id = await env.open()
    status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
    assert status == 200
    assert len(await _votes(env, request_id)) == 1  # the writer has read and committed once

    other = SqlDatabase(create_engine(env.db_url))
    try:
        now = env.quorum.clock.now()
        async with other.unit_of_work() as uow:
            await uow.freezes.add(
                Freeze(
                    id="frz_other",
                    environments=("production",),
                    services=(),
                    starts_at=now - timedelta(minutes=1),
                    ends_at=now + timedelta(hours=1),
                    reason="freeze from the other process",
                    created_by=RM_1,
                    created_at=now,
                )
            )
            await uow.commit()
    finally:
        await other.dispose()

    await env.quorum.click(ActionId.approve, OWNER_3, request_id)
    text = await ephemeral_to(env, OWNER_3, "frozen")
    assert "freeze from the other process" in text
    assert len(await _votes(env, request_id)) == 1


async def test_a_delegation_revoked_by_another_process_no_longer_counts(
    deputies_env: Env,
) -> None:
    env = deputies_env
    reply = await command(env, "/approvals", OWNER_2, f"delegate <@{DELEGATE}|d> for 4h")
    assert reply.text.startswith(f"<@{DELEGATE}> may now vote on your behalf"), reply.text
    first = await env.open()
    await env.quorum.click(ActionId.approve, DELEGATE, first)
    votes = await _votes(env, first)
    assert [(v["user"], v["on_behalf_of"]) for v in votes] == [(DELEGATE, OWNER_2)]

    other = SqlDatabase(create_engine(env.db_url))
    try:
        now = env.quorum.clock.now()
        async with other.unit_of_work() as uow:
            (delegation,) = await uow.delegations.list_by_delegator(OWNER_2, now)
            assert isinstance(delegation, Delegation)
            await uow.delegations.revoke(delegation.id, now)
            await uow.commit()
    finally:
        await other.dispose()

    # This process still holds the delegation in its short-lived cache, so the click is not
    # refused up front; the writer reads the revocation and refuses it.
    second = await env.open(version="v2")
    await env.quorum.click(ActionId.approve, DELEGATE, second)
    await ephemeral_to(env, DELEGATE, "not an approver")
    assert await _votes(env, second) == []
