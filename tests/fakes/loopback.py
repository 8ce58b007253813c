"""A base for fake provider APIs: a real aiohttp server on 127.0.0.1 (free port) that records
requests and lets tests wait for them without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the fake accepted (after its own authentication checks)."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int  # what the fake answered
    extra: dict[str, Any] = field(default_factory=dict)


class LoopbackServer:
    """Subclasses add routes in `routes(app)` and call `record(...)` for what tests inspect."""

    def __init__(self) -> None:
        self.recorded: list[Recorded] = []
        self.refused: list[str] = []  # why requests were refused (bad auth, …)
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def record(self, entry: Recorded) -> None:
        async with self._cond:
            self.recorded.append(entry)
            self._cond.notify_all()

    async def refuse(self, reason: str) -> None:
        async with self._cond:
            self.refused.append(reason)
            self._cond.notify_all()

    async def wait_for(
        self,
        predicate: Callable[[Recorded], bool] = lambda _r: True,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Recorded]:
        def matching() -> list[Recorded]:
            return [r for r in self.recorded if predicate(r)]

        async with self._cond:
            try:
                async with asyncio.timeout(timeout):
                    await self._cond.wait_for(lambda: len(matching()) >= count)
            except TimeoutError:
                raise AssertionError(
                    f"waited {timeout}s for {count} request(s); recorded {self.recorded!r}, "
                    f"refused {self.refused!r}"
                ) from None
            return matching()
