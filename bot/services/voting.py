"""cast_vote: identity-checked votes, group-committed, answered within Slack's 3 seconds.

Design (measured by bench/vote_path.py):
- Refusals are answered from a cached snapshot of the request without a write. That is safe
  because every refusal except FROZEN is monotone: votes are never removed and decisions are final,
  so DECIDED, ALREADY_VOTED, NOT_ELIGIBLE, REQUESTER stay true on fresher state; and NOT_NEEDED
  stays true because filled slots (the rank of a transversal matroid) are submodular: an approval
  that adds nothing to fewer votes adds nothing to more. FROZEN is never answered from the cache.
- Votes that may count go to one writer task that commits every vote waiting at that moment in a
  single transaction (group commit), re-checking each against the locked, fresh request.
- The caller acknowledges Slack only after `cast` returns, i.e. after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.domain import events
from bot.domain.decisions import apply_outcome
from bot.domain.eligibility import Refusal, RefusalCode, check_vote, resolve_voter, rule_for
from bot.domain.model import ApprovalRequest, Delegation, Vote, VoteKind
from bot.domain.quorum import tally
from bot.ports import DuplicateVoteError, UnitOfWork
from bot.services.decisions import record_decision
from bot.services.deps import Deps
from bot.services.teams import team_members

log = logging.getLogger(__name__)

_MAX_BATCH = 256
_DELEGATIONS_TTL = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class VoteCommand:
    request_id: str
    actor: str  # the Slack-signed user who clicked
    kind: VoteKind
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class VoteResult:
    request: ApprovalRequest | None
    vote: Vote | None = None
    refusal: Refusal | None = None
    decided: bool = False  # this vote decided the request


@dataclass(slots=True)
class _Snapshot:
    request: ApprovalRequest
    votes: list[Vote]


@dataclass(slots=True)
class _Pending:
    command: VoteCommand
    eligible: Mapping[str, frozenset[str]]
    future: asyncio.Future[VoteResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _not_found(request_id: str) -> Refusal:
    return Refusal(RefusalCode.DECIDED, f"Quorum has no request {request_id}.")


class Voting:
    """The vote use case with its snapshot cache and group-commit writer (one per process)."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._snapshots: dict[str, _Snapshot] = {}
        self._delegations: tuple[datetime, Sequence[Delegation]] | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="quorum-vote-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("Quorum is shutting down"))

    async def precheck(self, command: VoteCommand) -> VoteResult:
        """Answer from the snapshot: a refusal (final), or a result with neither vote nor refusal
        meaning "may count; submit it" (used before opening the rejection modal)."""
        snapshot = await self._snapshot(command.request_id)
        if snapshot is None:
            return VoteResult(request=None, refusal=_not_found(command.request_id))
        eligible = await team_members(self._deps, {r.team for r in snapshot.request.rules})
        refusal = await self._cached_refusal(snapshot, eligible, command, require_reason=False)
        return VoteResult(request=snapshot.request, refusal=refusal)

    async def cast(self, command: VoteCommand) -> VoteResult:
        """Record the vote (durably) or say why not. Returns after the commit."""
        snapshot = await self._snapshot(command.request_id)
        if snapshot is None:
            return VoteResult(request=None, refusal=_not_found(command.request_id))
        eligible = await team_members(self._deps, {r.team for r in snapshot.request.rules})
        refusal = await self._cached_refusal(snapshot, eligible, command, require_reason=True)
        if refusal is not None:
            return VoteResult(request=snapshot.request, refusal=refusal)
        pending = _Pending(command=command, eligible=eligible)
        if self._writer is None:  # not started (tests of the use case alone): write inline
            return (await self._write([pending]))[0]
        await self._queue.put(pending)
        return await pending.future

    # --- snapshot side --------------------------------------------------------------------

    async def _snapshot(self, request_id: str) -> _Snapshot | None:
        cached = self._snapshots.get(request_id)
        if cached is not None:
            return cached
        async with self._deps.database.unit_of_work() as uow:
            request = await uow.requests.get(request_id)
            if request is None:
                return None
            votes = list(await uow.votes.list_for(request_id))
        snapshot = _Snapshot(request=request, votes=votes)
        self._snapshots[request_id] = snapshot
        return snapshot

    async def _active_delegations(self) -> Sequence[Delegation]:
        now = self._deps.clock.now()
        if self._delegations is not None and now - self._delegations[0] < _DELEGATIONS_TTL:
            return self._delegations[1]
        async with self._deps.database.unit_of_work() as uow:
            delegations = await uow.delegations.list_active(now)
        self._delegations = (now, delegations)
        return delegations

    def forget_delegations(self) -> None:
        """Called after this process changes a delegation."""
        self._delegations = None

    async def _cached_refusal(
        self,
        snapshot: _Snapshot,
        eligible: Mapping[str, frozenset[str]],
        command: VoteCommand,
        *,
        require_reason: bool,
    ) -> Refusal | None:
        delegations = await self._active_delegations()
        refusal = _check(
            snapshot.request,
            snapshot.votes,
            eligible,
            delegations,
            command,
            self._deps.clock.now(),
            require_reason=require_reason,
        )
        return None if refusal is None or refusal.code is RefusalCode.FROZEN else refusal

    # --- writer side ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < _MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                results = await self._write(batch)
            except Exception:
                log.exception("group commit of %d votes failed; retrying one by one", len(batch))
                results = []
                for pending in batch:
                    try:
                        results.extend(await self._write([pending]))
                    except Exception as exc:
                        log.exception("vote on %s failed", pending.command.request_id)
                        results.append(exc)  # type: ignore[arg-type]
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    async def _write(self, batch: Sequence[_Pending]) -> list[VoteResult]:
        deps = self._deps
        async with deps.database.unit_of_work() as uow:
            now = deps.clock.now()
            delegations = await uow.delegations.list_active(now)
            states: dict[str, _Snapshot | None] = {}
            changed: set[str] = set()
            results: list[VoteResult] = []
            for pending in batch:
                rid = pending.command.request_id
                if rid not in states:
                    states[rid] = await _load_locked(uow, rid)
                state = states[rid]
                if state is None:
                    results.append(VoteResult(request=None, refusal=_not_found(rid)))
                    continue
                result = await _record(deps, uow, state, pending, delegations, now)
                if result.vote is not None:
                    changed.add(rid)
                results.append(result)
            for rid in changed:
                state = states[rid]
                assert state is not None
                await uow.requests.save(state.request)
            await uow.commit()
        for rid, state in states.items():
            if state is not None:
                self._snapshots[rid] = _Snapshot(request=state.request, votes=list(state.votes))
        if changed:
            deps.wake("cards")
            if any(r.decided for r in results):
                deps.wake("deliveries")
        return results


def _check(
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    delegations: Sequence[Delegation],
    command: VoteCommand,
    now: datetime,
    *,
    require_reason: bool,
) -> Refusal | None:
    voter = resolve_voter(
        request,
        votes,
        eligible,
        delegations,
        actor=command.actor,
        kind=command.kind,
        now=now,
        reason=command.reason,
        require_reason=require_reason,
    )
    return check_vote(
        request,
        votes,
        eligible,
        voter=voter,
        actor=None if voter == command.actor else command.actor,
        kind=command.kind,
        now=now,
        reason=command.reason,
        require_reason=require_reason,
    )


async def _load_locked(uow: UnitOfWork, request_id: str) -> _Snapshot | None:
    request = await uow.requests.get_for_update(request_id)
    if request is None:
        return None
    return _Snapshot(request=request, votes=list(await uow.votes.list_for(request_id)))


async def _record(
    deps: Deps,
    uow: UnitOfWork,
    state: _Snapshot,
    pending: _Pending,
    delegations: Sequence[Delegation],
    now: datetime,
) -> VoteResult:
    command, eligible, request = pending.command, pending.eligible, state.request
    refusal = _check(request, state.votes, eligible, delegations, command, now, require_reason=True)
    if refusal is not None:
        return VoteResult(request=request, refusal=refusal)
    voter = resolve_voter(
        request,
        state.votes,
        eligible,
        delegations,
        actor=command.actor,
        kind=command.kind,
        now=now,
        reason=command.reason,
    )
    vote = Vote(
        request_id=request.id,
        voter=voter,
        kind=command.kind,
        cast_at=now,
        reason=(command.reason or "").strip() or None,
        actor=command.actor if command.actor != voter else None,
        rule=rule_for(request, state.votes, eligible, voter)
        if command.kind is VoteKind.APPROVE
        else None,
    )
    try:
        await uow.votes.add(vote)
    except DuplicateVoteError:  # another process recorded this person's vote meanwhile
        return VoteResult(
            request=request,
            refusal=Refusal(RefusalCode.ALREADY_VOTED, "You already voted on this request."),
        )
    await uow.events.append(events.vote_recorded(vote))
    state.votes.append(vote)
    outcome = tally(request.rules, eligible, state.votes, request.reject_mode)
    decided = apply_outcome(request, outcome, now)
    if decided:
        await record_decision(deps, uow, request, state.votes, outcome, now)
    return VoteResult(request=request, vote=vote, decided=decided)
