"""Re-arm on start: how long the first timers run takes to find every open request's timers.

Seeds N open requests (default 10 000) on a SQLite file, then times `rearm` (list every open
request, recompute its next timer from the policy and its history, write the ones that moved,
return the earliest) in two cases: a plain restart (every stored timer is still right: nothing is
written) and a restart after the SLA policy changed (every timer moved: all N are rewritten).
Target: under 5 s for 10 000 on SQLite. Run: `.venv/bin/python -m bench.rearm [N]`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from bot.clock import FixedClock
from bot.domain.model import ApprovalRequest, RejectMode, RequestDetails, Requester, Risk, Rule
from bot.domain.sla import StepKind, next_step
from bot.policy import Policy, load_policy
from bot.ports import Announcer
from bot.services.deps import Deps
from bot.services.timers import TimersJob, rearm, sla_spec, start_sla
from storage.db import create_engine
from storage.migrate import upgrade
from storage.uow import SqlDatabase
from tests.paths import SPEC_EXAMPLE

POLICY_FILE = SPEC_EXAMPLE
NOW = datetime(2026, 3, 24, 10, 0, tzinfo=UTC)
BATCH = 1000


def _request(i: int, policy: Policy) -> ApprovalRequest:
    opened = NOW - timedelta(minutes=i % 600)  # spread over the ladder: 0-10 h old
    request = ApprovalRequest(
        id=f"req_{i:06d}",
        source="generic",
        service="payments-api",
        environment="production",
        risk=Risk.HIGH,
        owner_team="payments",
        channel="C0PAYMENTS",
        rules=(
            Rule("owner-review", "payments", 2),
            Rule("sre-signoff", "sre", 1),
            Rule("security-review", "security", 1, origin="risk:high"),
        ),
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(github="octo-payments-dev", slack_user="U0PAYDEV1"),
        details=RequestDetails(version=f"v1.{i}", title=f"Release {i}"),
        created_at=opened,
        callback={"url": "https://ci.example.com/hook"},
    )
    start_sla(policy, request, opened)
    _settle(policy, request)
    return request


def _settle(policy: Policy, request: ApprovalRequest) -> None:
    """Fire the steps due by NOW, as a running Quorum would have (the stored timers are right)."""
    spec = sla_spec(policy, request)
    while True:
        step = next_step(
            spec, request.sla_started_at, request.reminders_sent, request.escalation_level, NOW
        )
        if step is None or step.due_at > NOW:
            request.next_due_at = step.due_at if step is not None else None
            return
        if step.kind is StepKind.REMIND:
            request.reminders_sent = step.reminder
        elif step.kind is StepKind.ESCALATE:
            request.escalation_level = step.level
        else:
            raise AssertionError("seeded requests are younger than expire_after")


async def _seed(database: SqlDatabase, policy: Policy, n: int) -> None:
    for start in range(0, n, BATCH):
        async with database.unit_of_work() as uow:
            for i in range(start, min(start + BATCH, n)):
                await uow.requests.add(_request(i, policy))
            await uow.commit()


class _Directory:
    """The SRE on-call user group, without Slack."""

    async def usergroup_members(self, usergroup: str) -> frozenset[str]:
        return frozenset({"U0SRE1", "U0SRE2"})

    async def user_by_email(self, email: str) -> str | None:
        return None

    async def user_timezone(self, user: str) -> str | None:
        return None


def _deps(database: SqlDatabase, policy: Policy) -> Deps:
    return Deps(
        database=database,
        clock=FixedClock(NOW),
        policy=policy,
        announcer=cast(Announcer, None),  # re-arm announces nothing
        directory=_Directory(),
        notifiers={},
        public_url="http://quorum.test",
    )


def _changed_policy(policy: Policy) -> Policy:
    """The same policy with production's SLA ladder stretched (every timer moves)."""
    env = policy.environments["production"]
    assert env.sla is not None
    sla = env.sla.model_copy(update={"remind_after": timedelta(minutes=20)})
    environments = {**policy.environments, "production": env.model_copy(update={"sla": sla})}
    return policy.model_copy(update={"environments": environments})


async def main(n: int) -> None:
    policy = load_policy(POLICY_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'rearm.db'}"
        await upgrade(url)
        database = SqlDatabase(create_engine(url))
        try:
            started = time.perf_counter()
            await _seed(database, policy, n)
            print(f"seeded {n} open requests in {time.perf_counter() - started:.2f} s")

            deps = _deps(database, policy)
            started = time.perf_counter()
            plain = await rearm(deps)
            took = time.perf_counter() - started
            print(
                f"re-arm, plain restart:      {took:.2f} s  ({plain.open_requests} open, "
                f"{plain.changed} moved, earliest {plain.earliest:%H:%M:%S})"
            )

            changed = _deps(database, _changed_policy(policy))
            started = time.perf_counter()
            moved = await rearm(changed)
            took = time.perf_counter() - started
            print(
                f"re-arm, policy changed:     {took:.2f} s  ({moved.open_requests} open, "
                f"{moved.changed} moved and rewritten)"
            )

            # What start-up really runs: the first timers job = re-arm + a sweep.
            later = replace(changed, clock=FixedClock(NOW))
            job = TimersJob(later)
            started = time.perf_counter()
            fired = await job.run()
            took = time.perf_counter() - started
            print(
                f"first timers job (re-arm + one sweep, {fired} overdue steps fired): {took:.2f} s"
            )
        finally:
            await database.dispose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
