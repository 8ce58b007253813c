"""Bring Slack in line with the database: post or update cards, post vote replies.

Slack is derived state. Each sweep re-reads what is out of date, so a crash or a Slack outage
between a commit and its announcement is repaired by the next sweep; nothing is announced that
was not committed first. While Slack is down, a sweep's failures are logged as one line per
window and the sweep backs off (`Deps.failures`): it tries again at the logged retry time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.domain import events
from bot.domain.freezes import FreezeWindow
from bot.domain.model import ApprovalRequest, Delivery, DeliveryState, Vote
from bot.domain.quorum import tally
from bot.ports import CardDue, CardRef, CardStatus, PostedMessage, SyncedCard
from bot.services.deps import Deps
from bot.services.freezes import card_note, windows_at
from bot.services.pacing import CARD_UPDATES
from bot.services.progress import PROGRESS, on_card_posted
from bot.services.teams import request_team_members
from bot.services.timers import timer_note
from bot.services.updates import external_status_note

log = logging.getLogger(__name__)


# A request that named nowhere to call back (a generic webhook without `callback_url`): its
# pipeline reads the decision from GET /api/v1/requests/{id}.
POLLED = "none, the pipeline polls for the decision"

CARDS_PER_READ = 10  # cards read and drawn together by a sweep (see `sync_cards`)
VOTES_PER_REPLY = 10  # votes listed in one thread reply: readable, and far within Slack's limit
CARD_SYNC = "card sync (chat.postMessage / chat.update)"
VOTE_REPLIES = "vote replies (chat.postMessage)"


def callback_status(request: ApprovalRequest, deliveries: list[Delivery]) -> str | None:
    """The card's line about the pipeline callback."""
    if not request.callback:  # nothing to notify: decided requests say so
        return None if request.state.is_open else POLLED
    deliveries = [d for d in deliveries if d.kind != PROGRESS]  # status reports are not callbacks
    if not deliveries:
        return None
    latest = deliveries[-1]
    if latest.state is DeliveryState.DELIVERED:
        return "pipeline notified"
    if latest.state is DeliveryState.FAILED:
        # The error says what the receiver answered, by status code and in fixed words (never
        # its body), and whether that answer is permanent (docs/pipelines/generic.md).
        tries = "1 attempt" if latest.attempts == 1 else f"{latest.attempts} attempts"
        error = latest.last_error or "unknown error"
        return f"pipeline NOT notified (gave up after {tries}): {error}"
    if latest.attempts == 0:
        return "notifying pipeline…"
    return f"retrying, attempt {latest.attempts + 1}: {latest.last_error or 'error'}"


def card_warnings(request: ApprovalRequest) -> tuple[str, ...]:
    warnings: list[str] = []
    if request.service is None:
        named = request.details.requested_service or "the service"
        warnings.append(f"No owner: {named!r} is not in the policy; routed to the default channel.")
    if request.requester.checking:
        warnings.append(
            "Checking requester: Slack could not be asked who requested this deployment yet, "
            "so no approval counts until Quorum knows (it retries)."
        )
    elif request.requester.slack_user is None and not request.self_approval:
        warnings.append(
            "Requester unknown: the requester could not be matched to a Slack user"
            + (
                f", so {request.rules[-1].team} must also approve (rule requester-unknown)."
                if request.rules and request.rules[-1].origin == "unmapped-requester"
                else "; separation of duties cannot be enforced, so Quorum refused it."
            )
        )
    if note := external_status_note(request):
        warnings.append(note)
    return tuple(warnings)


async def sync_cards(deps: Deps) -> int:
    """Post missing cards and update stale ones. Returns how many were brought up to date.

    One read picks the cards drawn now; they are then read and drawn `CARDS_PER_READ` at a
    time, so a burst of decisions (each card with all its votes) never becomes one long
    stretch of the event loop while clicks wait. A new card's position is recorded right
    after it is posted (a crash must not post it twice), updated cards' revisions in one write
    per chunk (an update repeated after a crash is harmless)."""
    throttle, budget = deps.pacing.cards, deps.pacing.updates
    if not deps.failures.ready(CARD_SYNC, deps.clock.now()):
        return 0  # backing off while Slack is down
    async with deps.database.unit_of_work(read_only=True) as uow:
        # New cards and decided requests go out at once; a pending card under a burst of votes
        # is updated at most once a second, and all pending cards together within the
        # workspace's chat.update budget (the others stay out of date for a later sweep).
        due = await uow.requests.list_cards_due(deps.tuning.batch_size, skip=throttle.waiting())
        chosen = [card.request_id for card in due if _urgent(card)]
        paced = sorted(
            (
                c.request_id
                for c in due
                if not _urgent(c) and throttle.due(c.request_id, urgent=False)
            ),
            key=throttle.last_update,  # the longest-waiting first
        )
        chosen += [request_id for request_id in paced if budget.take(CARD_UPDATES)]
        if not chosen:
            return 0
        windows = await windows_at(uow, deps.policy, deps.clock.now())
    drawn = 0
    for start in range(0, len(chosen), CARDS_PER_READ):
        drawn += await _sync_chunk(deps, chosen[start : start + CARDS_PER_READ], windows)
    return drawn


async def _sync_chunk(deps: Deps, chosen: list[str], windows: Sequence[FreezeWindow]) -> int:
    async with deps.database.unit_of_work(read_only=True) as uow:
        requests = await uow.requests.get_many(chosen)
        stale = [requests[request_id] for request_id in chosen if request_id in requests]
        votes = await uow.votes.list_for_many([r.id for r in stale])
        deliveries = await uow.outbox.get_for_requests([r.id for r in stale])
    updated: list[SyncedCard] = []
    for request in stale:
        if not deps.failures.ready(CARD_SYNC, deps.clock.now()):
            break  # Slack is down: the rest wait for the retry too
        try:
            posted = await _show_card(
                deps, request, list(votes[request.id]), list(deliveries[request.id]), windows
            )
        except Exception as exc:
            deps.failures.failed(log, CARD_SYNC, exc, deps.clock.now(), backoff=True)
            continue
        deps.failures.succeeded(log, CARD_SYNC, deps.clock.now())
        deps.pacing.cards.updated(request.id)
        if request.message_ts is not None:
            updated.append(SyncedCard(request.id, request.revision, posted.channel, posted.ts))
    if updated:
        async with deps.database.unit_of_work() as uow:
            await uow.requests.mark_cards_synced(updated)
            await uow.commit()
    return len(stale)


def _urgent(card: CardDue) -> bool:
    return not card.posted or not card.open


async def _show_card(
    deps: Deps,
    request: ApprovalRequest,
    votes: list[Vote],
    deliveries: list[Delivery],
    windows: Sequence[FreezeWindow],
) -> PostedMessage:
    eligible = await request_team_members(deps, request)
    status = CardStatus(
        callback=callback_status(request, deliveries),
        warnings=card_warnings(request),
        frozen_note=await card_note(deps, request, windows),
        next_timer=timer_note(deps.policy, request, deps.clock.now(), relative=False),
        offer_break_glass=deps.policy.break_glass is not None and not request.break_glass,
    )
    current = tally(request.rules, eligible, votes, request.reject_mode)
    posted = await deps.announcer.show_card(request, current, votes, status)
    if request.message_ts is None:  # a new card: record where it is before anything else
        now = deps.clock.now()
        card = SyncedCard(request.id, request.revision, posted.channel, posted.ts)
        async with deps.database.unit_of_work() as uow:
            await uow.requests.mark_cards_synced([card])
            await uow.events.append(events.card_posted(request.id, posted.channel, posted.ts, now))
            await on_card_posted(deps, uow, request, current, posted.channel, posted.ts, now)
            await uow.commit()
        deps.card_posted(request.id, posted.channel, posted.ts)
    return posted


async def announce_votes(deps: Deps) -> int:
    """Post thread replies under the cards for recorded votes not yet announced. Returns how
    many votes were announced.

    One reply lists a card's waiting votes, one line each (at most `VOTES_PER_REPLY`): Slack
    takes about one message a second per channel, so a burst of clicks becomes a few replies
    within seconds instead of a queue of one reply per vote that trails it by minutes."""
    if not deps.failures.ready(VOTE_REPLIES, deps.clock.now()):
        return 0  # backing off while Slack is down
    async with deps.database.unit_of_work(read_only=True) as uow:
        unannounced = await uow.votes.list_unannounced(deps.tuning.batch_size)
    waiting: dict[str, tuple[CardRef, list[Vote]]] = {}
    for vote, card in unannounced:  # oldest first, so each card's votes stay in order
        waiting.setdefault(card.request_id, (card, []))[1].append(vote)
    done = 0
    for card, votes in waiting.values():
        if card.message_ts is None:
            continue  # the card is not posted yet: the replies wait for it
        for start in range(0, len(votes), VOTES_PER_REPLY):
            if not deps.pacing.replies.take(card.channel):
                break  # about one message a second per channel; the rest stay due
            chunk = votes[start : start + VOTES_PER_REPLY]
            try:
                await _announce_votes(deps, card, chunk)
            except Exception as exc:
                deps.failures.failed(log, VOTE_REPLIES, exc, deps.clock.now(), backoff=True)
                if not deps.failures.ready(VOTE_REPLIES, deps.clock.now()):
                    return done  # Slack is down: every card's replies wait for the retry
                break
            deps.failures.succeeded(log, VOTE_REPLIES, deps.clock.now())
            done += len(chunk)
    return done


async def _announce_votes(deps: Deps, card: CardRef, votes: Sequence[Vote]) -> None:
    await deps.announcer.post_votes(card, votes)
    async with deps.database.unit_of_work() as uow:
        now = deps.clock.now()
        for vote in votes:
            await uow.votes.mark_announced(vote.request_id, vote.voter, now)
        await uow.commit()


async def announce(deps: Deps) -> None:
    """One sweep: cards first (vote replies are threaded under them), then vote replies."""
    await sync_cards(deps)
    await announce_votes(deps)
