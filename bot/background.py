"""Fire-and-forget work after an acknowledgement, tracked so shutdown can wait for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from bot.log_throttle import failure_kind, is_slack_error

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Holds references to running tasks (asyncio keeps only weak ones) and logs failures."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if is_slack_error(exc):  # Slack's answer (or its absence): one line, no traceback
                log.warning("background task %s failed: %s", task.get_name(), failure_kind(exc))
                return
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    async def drain(self, grace: float = 5.0) -> None:
        """Wait for running tasks (up to `grace` seconds), then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
