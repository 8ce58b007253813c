"""QUORUM_SQLITE_INLINE_WRITES: a vote's write transaction runs on the event loop's thread (the
default) or, switched off, on the SQLite connection's own thread; either way the vote counts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from handlers.action_ids import ActionId
from tests.e2e.harness import running_env, tmp_sqlite
from tests.e2e.slash import OWNER_2
from tests.storage.dbs import sqlite_driver_of


@pytest.mark.parametrize(
    ("setting", "inline"), [(None, True), ("1", True), ("0", False), ("false", False)]
)
async def test_the_vote_writer_follows_the_setting(
    tmp_path: Path, setting: str | None, inline: bool
) -> None:
    extra = {} if setting is None else {"QUORUM_SQLITE_INLINE_WRITES": setting}
    async with running_env(tmp_sqlite(tmp_path), extra_settings=extra) as env:
        request_id = await env.open(environment="staging", change_ticket=None)
        await env.card_of(request_id)
        async with env.quorum.deps.database.unit_of_work() as uow:
            writer = await sqlite_driver_of(uow)  # the writer engine's single connection
            await uow.commit()
        threads: list[tuple[int, str]] = []
        trace = writer.sqlite_connection().set_trace_callback  # set on the connection's thread
        await writer._execute(trace, lambda sql: threads.append((threading.get_ident(), sql)))
        try:
            status, _ = await env.quorum.click(ActionId.approve, OWNER_2, request_id)
        finally:
            await writer._execute(trace, None)
        assert status == 200
        inserts = [ident for ident, sql in threads if sql.startswith("INSERT INTO votes")]
        assert len(inserts) == 1
        assert (inserts[0] == threading.get_ident()) is inline
        _, data = await env.quorum.status(request_id)
        assert [vote["user"] for vote in data["votes"]] == [OWNER_2]
