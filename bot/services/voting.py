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
- Who clicked is checked against Slack before anything else (`_verify`: the installation, the
  card, and `users.info` for the clicker, cached a minute). A vote that would decide the request
  is checked afresh (`_fresh`): the teams' current members and every counted voter as Slack saw
  them within the last second (`handlers/slack_directory.FRESH_WINDOW`: concurrent deciding votes
  share one lookup per person; without it a busy round asked users.info for every voter on every
  click); a counted vote whose voter no longer qualifies stops counting (an audit event says
  why) and the request stays pending. The writer never decides on a vote that was not checked
  afresh: it hands it back to be checked (`_Retry`). Separation of duties fails closed: when
  Slack cannot be asked, the vote is refused.
- While Slack is down (unreachable, 5xx, 429), a vote that does not decide may be checked
  against a cached answer up to 10 minutes old (`handlers/slack_directory.STALE_IF_ERROR`):
  the deciding vote re-checks every counted voter afresh anyway. A deciding vote is refused
  ("Slack could not be asked") and changes nothing; the request stays pending until Slack is
  back. These failures are logged as one line per window (`Deps.failures`), not per click.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.domain import events
from bot.domain.ballot import Ballot
from bot.domain.decisions import apply_outcome
from bot.domain.delegation_rules import DelegationTerms
from bot.domain.eligibility import Refusal, RefusalCode, check_vote, resolve_voter
from bot.domain.freezes import FreezeWindow
from bot.domain.model import ApprovalRequest, Delegation, Freeze, Vote, VoteKind
from bot.domain.mrkdwn import md
from bot.domain.people import Interaction, card_refusal, interaction_refusal, person_refusal
from bot.domain.quorum import tally
from bot.domain.text import is_blank
from bot.ports import UnitOfWork
from bot.services import progress
from bot.services.decisions import record_decision
from bot.services.delegations import delegation_terms
from bot.services.deps import Deps
from bot.services.freezes import frozen_reason_in, windows_from
from bot.services.jobs import Job
from bot.services.people import SlackUnavailable, installation, refusal_for
from bot.services.teams import request_team_members

log = logging.getLogger(__name__)

_MAX_BATCH = 256
# Turns of the event loop the writer waits, after the first vote of a batch, while each turn adds
# votes to the queue (see `_gather`).
_GATHER_TURNS = 4
# What recording votes changes on a request (the revision is bumped by every save).
_VOTE_CHANGES = ("state", "decided_at", "decision_reason")
_DELEGATIONS_TTL = timedelta(seconds=5)
_SNAPSHOTS = 2048  # requests whose snapshot is cached (insertion order: oldest write first)


@dataclass(frozen=True, slots=True)
class VoteCommand:
    request_id: str
    actor: str  # the Slack-signed user who clicked
    kind: VoteKind
    reason: str | None = None
    # Where Slack's payload says the click came from (checked against the installation and the
    # card); None only for callers that are not a Slack interaction.
    interaction: Interaction | None = None
    on_card: bool = True  # False: a submission of Quorum's own modal (opened from a card click)


@dataclass(frozen=True, slots=True)
class VoteResult:
    request: ApprovalRequest | None
    vote: Vote | None = None
    refusal: Refusal | None = None
    decided: bool = False  # this vote decided the request


@dataclass(slots=True)
class _Snapshot:
    request: ApprovalRequest
    votes: Ballot


@dataclass(frozen=True, slots=True)
class _Written:
    """What the writer read in its last batch, with the database's mark after that commit."""

    mark: Hashable
    delegations: Sequence[Delegation]
    freezes: Sequence[Freeze] | None  # None: not read (a batch of rejections only)


@dataclass(frozen=True, slots=True)
class _Retry:
    """The writer's answer for a vote that would decide the request but was not checked afresh."""

    request: ApprovalRequest


@dataclass(slots=True)
class _Pending:
    command: VoteCommand
    eligible: Mapping[str, frozenset[str]]
    # `eligible` was read afresh from Slack for this vote (it may decide the request), and these
    # counted votes stopped counting then (voter, why).
    fresh: bool = False
    dropped: tuple[tuple[str, str], ...] = ()
    future: asyncio.Future[VoteResult | _Retry] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_FRESH_TRIES = 3
_NOT_MONOTONE = frozenset({RefusalCode.FROZEN, RefusalCode.CHECKING_REQUESTER})
VOTE_CHECKS = "vote checks (who clicked, from Slack)"
DECIDING_CHECKS = "deciding-vote checks (every voter afresh, from Slack)"
_SLACK_DOWN = (
    "Quorum could not check with Slack who you are, so your vote was not recorded. "
    "Try again in a minute."
)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _not_found(request_id: str) -> Refusal:
    return Refusal(RefusalCode.DECIDED, f"Quorum has no request {request_id}.")


class Voting:
    """The vote use case with its snapshot cache and group-commit writer (one per process)."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._snapshots: dict[str, _Snapshot] = {}
        self._loading: dict[str, asyncio.Future[_Snapshot | None]] = {}
        self._loader: asyncio.Task[None] | None = None
        self._forgotten = 0  # bumped by forget_request: reads begun before are not cached
        self._delegations: tuple[datetime, Sequence[Delegation]] | None = None
        self._delegations_read: asyncio.Future[Sequence[Delegation]] | None = None
        self._delegations_gen = 0  # bumped by forget_delegations: older reads are not kept
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._written: _Written | None = None

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="quorum-vote-writer")

    async def stop(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
            self._loader = None
        if self._delegations_read is not None:
            self._delegations_read.cancel()
            self._delegations_read = None
        waiting, self._loading = self._loading, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("Quorum is shutting down"))
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
        refusal = await self._verify(snapshot, command)
        if refusal is not None:
            return VoteResult(request=snapshot.request, refusal=refusal)
        eligible = await self._members(snapshot)
        if isinstance(eligible, Refusal):
            return VoteResult(request=snapshot.request, refusal=eligible)
        _, refusal = await self._cached_refusal(snapshot, eligible, command, require_reason=False)
        return VoteResult(request=snapshot.request, refusal=refusal)

    async def cast(self, command: VoteCommand) -> VoteResult:
        """Record the vote (durably) or say why not. Returns after the commit."""
        snapshot = await self._snapshot(command.request_id)
        if snapshot is None:
            return VoteResult(request=None, refusal=_not_found(command.request_id))
        refusal = await self._verify(snapshot, command)
        if refusal is not None:
            return VoteResult(request=snapshot.request, refusal=refusal)
        for _ in range(_FRESH_TRIES):
            eligible = await self._members(snapshot)
            if isinstance(eligible, Refusal):
                return VoteResult(request=snapshot.request, refusal=eligible)
            voter, refusal = await self._cached_refusal(
                snapshot, eligible, command, require_reason=True
            )
            if refusal is not None:
                return VoteResult(request=snapshot.request, refusal=refusal)
            pending = _Pending(command=command, eligible=eligible)
            if _would_decide(snapshot, eligible, command, voter, self._deps.clock.now()):
                checked = await self._fresh(snapshot, command)
                if isinstance(checked, Refusal):
                    return VoteResult(request=snapshot.request, refusal=checked)
                pending.eligible, pending.dropped = checked
                pending.fresh = True
            if self._writer is None:  # not started (tests of the use case alone): write inline
                result = (await self._write([pending]))[0]
            else:
                await self._queue.put(pending)
                result = await pending.future
            if not isinstance(result, _Retry):
                return result
            # Votes committed since the snapshot make this one decide: check it afresh.
            snapshot = self._snapshots.get(command.request_id) or snapshot
        return VoteResult(
            request=snapshot.request,
            refusal=Refusal(
                RefusalCode.UNVERIFIED,
                "Votes on this request are changing too fast to check yours; try again.",
            ),
        )

    # --- who clicked ----------------------------------------------------------------------

    async def _members(self, snapshot: _Snapshot) -> Mapping[str, frozenset[str]] | Refusal:
        """The request's teams (user groups as cached, or stale while Slack is down); a refusal
        when Slack cannot say and nothing is cached."""
        try:
            return await request_team_members(self._deps, snapshot.request)
        except Exception as exc:
            self._deps.failures.failed(log, VOTE_CHECKS, exc, self._deps.clock.now())
            return Refusal(RefusalCode.UNVERIFIED, _SLACK_DOWN)

    async def _verify(self, snapshot: _Snapshot, command: VoteCommand) -> Refusal | None:
        """None when Slack vouches for the click: sent for Quorum's app in its workspace, on the
        request's card, by a full member of the workspace (not a guest, bot, deactivated or
        external user)."""
        try:
            interaction = command.interaction
            if interaction is not None:
                why = interaction_refusal(interaction, await installation(self._deps))
                if why is None and command.on_card:
                    why = await self._card_refusal(snapshot, interaction)
                if why is not None:
                    return Refusal(RefusalCode.UNVERIFIED, why)
            why = await refusal_for(self._deps, command.actor)
        except SlackUnavailable as exc:
            cause = exc.__cause__ or exc
            self._deps.failures.failed(log, VOTE_CHECKS, cause, self._deps.clock.now())
            return Refusal(RefusalCode.UNVERIFIED, _SLACK_DOWN)
        if why is not None:
            return Refusal(RefusalCode.UNVERIFIED, md("{} Your vote was not recorded.", why))
        return None

    async def _card_refusal(self, snapshot: _Snapshot, interaction: Interaction) -> str | None:
        request = snapshot.request
        if card_refusal(interaction, request.channel, request.message_ts) is None:
            return None
        # The card may have been posted (or moved) since the snapshot: its position is written
        # without a revision bump, so read it before refusing.
        async with self._deps.database.unit_of_work(read_only=True) as uow:
            stored = await uow.requests.get(request.id)
        if stored is None:
            return card_refusal(interaction, request.channel, request.message_ts)
        request.channel, request.message_ts = stored.channel, stored.message_ts
        return card_refusal(interaction, stored.channel, stored.message_ts)

    async def _fresh(
        self, snapshot: _Snapshot, command: VoteCommand
    ) -> tuple[Mapping[str, frozenset[str]], tuple[tuple[str, str], ...]] | Refusal:
        """For a vote that may decide: the teams' members as Slack has them now, without anyone
        Slack no longer vouches for (the clicker included), and which counted votes that drops."""
        deps = self._deps
        try:
            installation = await deps.directory.installation()
            clicker = await deps.directory.user(command.actor, fresh=True)
            eligible = await request_team_members(deps, snapshot.request, fresh=True)
            voters = {v.voter for v in snapshot.votes} | {
                v.actor for v in snapshot.votes if v.actor
            }
            ordered = sorted(voters - {command.actor})  # asked together: there may be many
            answers = await asyncio.gather(
                *(deps.directory.user(uid, fresh=True) for uid in ordered)
            )
            people = dict(zip(ordered, answers, strict=True))
            if command.actor in voters:
                people[command.actor] = clicker
        except Exception as exc:
            deps.failures.failed(log, DECIDING_CHECKS, exc, deps.clock.now())
            return Refusal(RefusalCode.UNVERIFIED, _SLACK_DOWN)
        why = person_refusal(command.actor, clicker, installation)
        if why is not None:
            return Refusal(RefusalCode.UNVERIFIED, md("{} Your vote was not recorded.", why))
        untrusted: dict[str, str] = {
            uid: why
            for uid, person in people.items()
            if (why := person_refusal(uid, person, installation)) is not None
        }
        # A delegated vote stops counting when the person who clicked no longer qualifies.
        for vote in snapshot.votes:
            if vote.actor and vote.actor in untrusted and vote.voter not in untrusted:
                untrusted[vote.voter] = f"the vote was cast by {untrusted[vote.actor]}"
        if untrusted:
            eligible = {team: members - untrusted.keys() for team, members in eligible.items()}
        counted = {v.voter for v in snapshot.votes if v.kind is VoteKind.APPROVE and v.rule}
        dropped = tuple(
            (voter, untrusted.get(voter, "no longer in the team of any rule of the request"))
            for voter in sorted(counted)
            if voter in untrusted
            or not any(rule.admits(voter, eligible) for rule in snapshot.request.rules)
        )
        return eligible, dropped

    # --- snapshot side --------------------------------------------------------------------

    async def _snapshot(self, request_id: str) -> _Snapshot | None:
        cached = self._snapshots.get(request_id)
        # An SLA escalation widens who may vote, so NOT_ELIGIBLE / NOT_NEEDED are monotone only
        # until the request's next timer: once it has passed, re-read (another process may have
        # escalated it).
        due = cached.request.next_due_at if cached is not None else None
        if (
            cached is not None
            and (due is None or due > self._deps.clock.now())
            and not cached.request.requester.checking  # resolved by another process, perhaps
        ):
            return cached
        loading = self._loading.get(request_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            loading.add_done_callback(_retrieved)  # every waiter may have given up
            self._loading[request_id] = loading
            if self._loader is None or self._loader.done():
                self._loader = asyncio.create_task(self._load_snapshots(), name="quorum-snapshots")
        # shield: one click giving up must not cancel the read the others wait on.
        return await asyncio.shield(loading)

    async def _load_snapshots(self) -> None:
        """Read every snapshot clicks are waiting for, together: a new card draws many clicks
        at once, and they share one read of two statements instead of one read each."""
        while self._loading:
            waiting, self._loading = self._loading, {}
            forgotten = self._forgotten  # a request forgotten during the read is not cached
            try:
                async with self._deps.database.unit_of_work(read_only=True) as uow:
                    requests = await uow.requests.get_many(list(waiting))
                    votes = await uow.votes.list_for_many(list(requests))
            except Exception as exc:
                for future in waiting.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for request_id, future in waiting.items():
                request = requests.get(request_id)
                snapshot = None
                if request is not None:
                    snapshot = _Snapshot(request=request, votes=Ballot(votes[request_id]))
                    newer = self._snapshots.get(request_id)  # the writer may have committed since
                    if newer is not None and newer.request.revision > request.revision:
                        snapshot = newer
                    if forgotten == self._forgotten:
                        self._remember(request_id, snapshot)
                if not future.done():
                    future.set_result(snapshot)

    def _remember(self, request_id: str, snapshot: _Snapshot) -> None:
        """Cache a snapshot; the least recently written ones go first beyond `_SNAPSHOTS`."""
        self._snapshots.pop(request_id, None)
        self._snapshots[request_id] = snapshot
        while len(self._snapshots) > _SNAPSHOTS:
            del self._snapshots[next(iter(self._snapshots))]

    async def _active_delegations(self) -> Sequence[Delegation]:
        """Delegations in force now or later (the checks pick those in force at the moment),
        read at most every few seconds; clicks arriving during a read share it."""
        now = self._deps.clock.now()
        if self._delegations is not None and now - self._delegations[0] < _DELEGATIONS_TTL:
            return self._delegations[1]
        if self._delegations_read is None or self._delegations_read.done():
            read = asyncio.ensure_future(self._read_delegations(now, self._delegations_gen))
            read.add_done_callback(_retrieved)
            self._delegations_read = read
        return await asyncio.shield(self._delegations_read)

    async def _read_delegations(self, now: datetime, generation: int) -> Sequence[Delegation]:
        async with self._deps.database.unit_of_work(read_only=True) as uow:
            delegations = await uow.delegations.list_current(now)
        if generation == self._delegations_gen:  # not forgotten while it was being read
            self._delegations = (now, delegations)
        return delegations

    def forget_delegations(self) -> None:
        """Called after this process changes a delegation."""
        self._delegations = None
        self._delegations_read = None
        self._delegations_gen += 1

    def seed(self, request: ApprovalRequest) -> None:
        """Called with a request this process has just opened (as stored, no votes yet): its
        card draws clicks at once, and they need not read it first."""
        if request.id not in self._snapshots:
            self._remember(request.id, _Snapshot(request=request.copy(), votes=Ballot([])))

    def card_posted(self, request_id: str, channel: str, ts: str) -> None:
        """Called once a request's new card position is stored (it bumps no revision)."""
        cached = self._snapshots.get(request_id)
        if cached is not None and cached.request.message_ts is None:
            cached.request.channel, cached.request.message_ts = channel, ts

    def forget_request(self, request_id: str) -> None:
        """Called after this process changes a request's rules outside a vote (break glass)."""
        self._snapshots.pop(request_id, None)
        self._forgotten += 1

    async def _cached_refusal(
        self,
        snapshot: _Snapshot,
        eligible: Mapping[str, frozenset[str]],
        command: VoteCommand,
        *,
        require_reason: bool,
    ) -> tuple[str, Refusal | None]:
        """Whose vote the click counts as, and the refusal the snapshot proves (None: it may
        count; refusals that are not monotone are left to the writer's fresh state)."""
        delegations = await self._active_delegations()
        voter, refusal = _check(
            snapshot.request,
            snapshot.votes,
            eligible,
            delegations,
            command,
            self._deps.clock.now(),
            require_reason=require_reason,
            delegation=delegation_terms(self._deps.policy),
        )
        if refusal is None or refusal.code in _NOT_MONOTONE:
            return voter, None
        return voter, refusal

    # --- writer side ----------------------------------------------------------------------

    async def _gather(self) -> None:
        """Let the clicks the event loop is handling join the batch. Under load, a click that
        wakes the writer has others right behind it: read from their sockets in the same turn
        of the loop, each a few hundred µs from its `put`. Each turn the writer yields lets them
        reach the queue; it stops at the first turn that adds nothing (at once for a lone
        click). A batch has fixed work (its transaction, lock and statements) that bigger
        batches share: at concurrency 50 batches went from ~12 to ~25 votes and a click's CPU
        from ~1.0 to ~0.85 ms, for one or two turns of latency (bench/README.md)."""
        for _ in range(_GATHER_TURNS):
            queued = self._queue.qsize()
            if queued + 1 >= _MAX_BATCH:
                return
            await asyncio.sleep(0)
            if self._queue.qsize() == queued:
                return

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._gather()
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

    async def _write(self, batch: Sequence[_Pending]) -> list[VoteResult | _Retry]:
        try:
            return await self._write_batch(batch)
        except BaseException:
            self._written = None  # what it read may be gone with the rollback
            raise

    async def _write_batch(self, batch: Sequence[_Pending]) -> list[VoteResult | _Retry]:
        deps = self._deps
        async with deps.database.unit_of_work() as uow:
            now = deps.clock.now()
            # Delegations and freezes as stored now. When nothing was committed since this
            # writer's previous batch (the database can tell), what that batch read still holds.
            mark = await uow.write_mark()
            kept = self._written if mark is not None and self._written is not None else None
            kept = kept if kept is not None and kept.mark == mark else None
            delegations = (
                kept.delegations if kept is not None else await uow.delegations.list_current(now)
            )
            states = await _load_locked(uow, [p.command.request_id for p in batch], self._snapshots)
            # Freeze windows once per batch (rejections are never paused, so none needed then).
            approving = any(p.command.kind is VoteKind.APPROVE for p in batch)
            freezes = kept.freezes if kept is not None else None
            if freezes is None and approving:
                freezes = await uow.freezes.list_current(now)
            windows = windows_from(freezes or (), deps.policy, now) if approving else []
            changed: set[str] = set()
            results: list[VoteResult | _Retry] = []
            new_votes: list[Vote] = []
            for pending in batch:
                rid = pending.command.request_id
                state = states.get(rid)
                if state is None:
                    results.append(VoteResult(request=None, refusal=_not_found(rid)))
                    continue
                result = await _record(deps, uow, state, pending, delegations, windows, now)
                if isinstance(result, VoteResult) and result.vote is not None:
                    changed.add(rid)
                    new_votes.append(result.vote)
                results.append(result)
            # One INSERT for the whole batch: the requests are locked and every vote was checked
            # against their fresh votes above, so no duplicate can reach it.
            await uow.votes.add_many(new_votes)
            await uow.requests.save_many(
                [states[rid].request for rid in sorted(changed)], only=_VOTE_CHANGES
            )
            await uow.commit()
        committed = uow.committed_mark
        self._written = None if committed is None else _Written(committed, delegations, freezes)
        for rid, state in states.items():  # the batch's copies are now what is stored
            self._remember(rid, state)
        if changed:
            deps.wake(Job.ANNOUNCE)
            if any(isinstance(r, VoteResult) and r.decided for r in results):
                deps.wake(Job.DELIVERIES)
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
    frozen_reason: str | None = None,
    delegation: DelegationTerms,
) -> tuple[str, Refusal | None]:
    """Whose vote the click counts as, and why it may not be recorded (None: it may)."""
    # Only delegations the current policy honours (`delegation:`): not where they are never
    # honoured, not past its max_period, not to someone outside the allowed team. The rule
    # teams' members are complete in `eligible` unless an escalation widened them.
    delegations = delegation.honoured(
        delegations,
        delegate=command.actor,
        environment=request.environment,
        now=now,
        resolved={} if request.escalation_level else eligible,
    )
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
        frozen_reason=frozen_reason,
    )
    refusal = check_vote(
        request,
        votes,
        eligible,
        voter=voter,
        actor=None if voter == command.actor else command.actor,
        kind=command.kind,
        now=now,
        reason=command.reason,
        require_reason=require_reason,
        frozen_reason=frozen_reason,
    )
    return voter, refusal


def _would_decide(
    snapshot: _Snapshot,
    eligible: Mapping[str, frozenset[str]],
    command: VoteCommand,
    voter: str,
    now: datetime,
) -> bool:
    """Whether the vote, added to the snapshot's votes, decides the request. An approval that
    may be recorded fills exactly one more slot (`would_help`), so it decides when it fills the
    last one; a rejection is tallied."""
    request, votes = snapshot.request, snapshot.votes
    current = tally(request.rules, eligible, votes, request.reject_mode)
    if current.outcome is not None:
        return True
    if command.kind is VoteKind.APPROVE:
        return current.filled + 1 >= current.needed
    trial = votes.copy()
    actor = command.actor if command.actor != voter else None
    trial.append(Vote(request.id, voter, command.kind, now, command.reason, actor))
    return tally(request.rules, eligible, trial, request.reject_mode).outcome is not None


async def _load_locked(
    uow: UnitOfWork, request_ids: Sequence[str], cached: Mapping[str, _Snapshot]
) -> dict[str, _Snapshot]:
    """The batch's requests, locked, with their votes. Every write to a request bumps its
    revision except the card position's, so a cached snapshot at the locked revision, given
    the card position read with the lock, is exactly what is stored: it is copied (the batch
    may change it and then roll back) instead of read. Only the others are loaded, in two
    statements for all of them."""
    locks = await uow.requests.lock_many(request_ids)
    found: dict[str, _Snapshot] = {}
    for rid, lock in locks.items():
        snapshot = cached.get(rid)
        if snapshot is not None and snapshot.request.revision == lock.revision:
            request = snapshot.request.copy()
            request.channel, request.message_ts = lock.channel, lock.message_ts
            request.card_revision = lock.card_revision
            found[rid] = _Snapshot(request=request, votes=snapshot.votes.copy())
    stale = [rid for rid in locks if rid not in found]
    if stale:
        requests = await uow.requests.get_many_for_update(stale)
        votes = await uow.votes.list_for_many(list(requests))
        for rid, request in requests.items():
            found[rid] = _Snapshot(request=request, votes=Ballot(votes[rid]))
    return found


async def _record(
    deps: Deps,
    uow: UnitOfWork,
    state: _Snapshot,
    pending: _Pending,
    delegations: Sequence[Delegation],
    windows: Sequence[FreezeWindow],
    now: datetime,
) -> VoteResult | _Retry:
    command, eligible, request = pending.command, pending.eligible, state.request
    # Freezes are checked here, on fresh state, never from the snapshot cache.
    frozen = (
        frozen_reason_in(deps.policy, request, windows, now)
        if command.kind is VoteKind.APPROVE
        else None
    )
    voter, refusal = _check(
        request,
        state.votes,
        eligible,
        delegations,
        command,
        now,
        require_reason=True,
        frozen_reason=frozen,
        delegation=delegation_terms(deps.policy),
    )
    if refusal is not None:
        return VoteResult(request=request, refusal=refusal)
    reason = None if is_blank(command.reason) else (command.reason or "").strip()
    actor = command.actor if command.actor != voter else None
    vote = Vote(request.id, voter, command.kind, now, reason, actor)
    state.votes.append(vote)
    outcome = tally(request.rules, eligible, state.votes, request.reject_mode)
    if outcome.outcome is not None and not pending.fresh:
        state.votes = Ballot(list(state.votes)[:-1])  # nothing of this vote is kept
        return _Retry(request)
    await uow.events.append_many(
        [events.vote_not_counted(request.id, voter, why, now) for voter, why in pending.dropped]
    )
    if vote.kind is VoteKind.APPROVE:  # record the rule the approval was assigned to
        rule = next((p.rule.name for p in outcome.rules if voter in p.approvers), None)
        vote = Vote(request.id, voter, command.kind, now, reason, actor, rule)
        state.votes.replace_last(vote)
    await uow.events.append(events.vote_recorded(vote))
    decided = apply_outcome(request, outcome, now)
    if decided:
        await record_decision(deps, uow, request, state.votes, outcome, now)
    await progress.on_vote(deps, uow, request, state.votes, eligible, now, after=outcome)
    return VoteResult(request=request, vote=vote, decided=decided)
