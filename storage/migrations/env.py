"""Alembic environment: runs on a connection handed over by `storage.migrate`, or on its own.

`storage.migrate` passes a sync `Connection` (from `AsyncConnection.run_sync`) through
`config.attributes["connection"]`, so migrations also run from inside a running event loop.
Run from the `alembic` command line (e.g. `alembic -c storage/alembic.ini -x url=… revision
--autogenerate`), it opens its own async engine for the URL given by `-x url=` or DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from storage.db import create_engine
from storage.tables import UTCDateTime, metadata

config = context.config
target_metadata = metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import application code: the timezone-aware wrapper is rendered as
    # the plain column type it stores.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds tables
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_engine(url, sqlite_foreign_keys=False)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def _url_from_command_line() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("alembic: give the database with `-x url=…` or DATABASE_URL")
    return url


if context.is_offline_mode():
    raise SystemExit("alembic: offline (--sql) mode is not supported; run against a database")

shared_connection = config.attributes.get("connection")
if shared_connection is not None:
    do_run_migrations(shared_connection)
else:
    asyncio.run(run_async_migrations(_url_from_command_line()))
