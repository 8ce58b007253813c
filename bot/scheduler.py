"""Background jobs: APScheduler (in-memory) only wakes the process; the work is in our tables.

Each job is a sweep that re-reads due work from the database, so a missed wake-up, a crash or a
restart loses nothing. `wake(name)` runs a job now instead of at its next interval; a wake that
arrives while the job runs makes it run once more right after.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

Sweep = Callable[[], Awaitable[object]]


class _Job:
    def __init__(self, name: str, sweep: Sweep, min_gap: float = 0.0) -> None:
        self.name = name
        self._sweep = sweep
        self.min_gap = min_gap  # seconds between wake-ups (a burst of wakes becomes one run)
        self.last_wake = -math.inf
        self.trailing = False
        self._running = False
        self._again = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        self._idle.clear()
        try:
            while True:
                self._again = False
                try:
                    await self._sweep()
                except Exception:
                    log.exception("job %s failed; it runs again at its next interval", self.name)
                if not self._again:
                    break
        finally:
            self._running = False
            self._idle.set()


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._jobs: dict[str, _Job] = {}

    def every(self, name: str, seconds: float, sweep: Sweep, *, min_gap: float = 0.0) -> None:
        """Run `sweep` every `seconds`; `wake(name)` runs it sooner, at most once per `min_gap`
        seconds (wakes in between are folded into one trailing run)."""
        job = _Job(name, sweep, min_gap)
        self._jobs[name] = job
        self._scheduler.add_job(
            job.run,
            "interval",
            seconds=seconds,
            id=name,
            max_instances=2,  # the second instance only flags "run again"
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )

    def wake(self, name: str) -> None:
        job = self._jobs.get(name)
        if job is None or not self._scheduler.running:
            return
        since = time.monotonic() - job.last_wake
        if since >= job.min_gap:
            job.last_wake = time.monotonic()
            self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))
        elif not job.trailing:
            job.trailing = True
            self._scheduler.add_job(
                self._trailing_run,
                "date",
                args=[job],
                run_date=datetime.now(UTC) + timedelta(seconds=job.min_gap - since),
                id=f"{name}:trailing",
                replace_existing=True,
                max_instances=2,  # job.run folds an overlapping run into "run again"
                misfire_grace_time=None,
            )

    @staticmethod
    async def _trailing_run(job: _Job) -> None:
        job.trailing = False
        job.last_wake = time.monotonic()
        await job.run()

    def wake_in(self, name: str, delay: timedelta) -> None:
        """Run job `name` once after `delay` (a one-off wake-up for a known deadline; a newer
        call replaces the older one). The job's periodic sweep still runs."""
        job = self._jobs.get(name)
        if job is None:
            return
        self._scheduler.add_job(
            job.run,
            "date",
            run_date=datetime.now(UTC) + max(delay, timedelta(0)),
            id=f"{name}:wake",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def start(self) -> None:
        self._scheduler.start()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop waking jobs, let running sweeps finish (up to `grace` seconds), then stop."""
        if not self._scheduler.running:
            return
        self._scheduler.pause()
        try:
            async with asyncio.timeout(grace):
                for job in self._jobs.values():
                    await job.wait_idle()
        except TimeoutError:
            log.warning("background jobs still running after %.0f s; cancelling them", grace)
        self._scheduler.shutdown(wait=False)
