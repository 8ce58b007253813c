"""May this person vote on this request now, and if not, exactly why (the sentence shown to them).

Also who a click counts as when the person clicking holds delegations (`resolve_voter`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from bot.domain import mrkdwn
from bot.domain.ballot import Ballot
from bot.domain.model import ApprovalRequest, Delegation, RequestState, Vote, VoteKind
from bot.domain.mrkdwn import Mrkdwn, md
from bot.domain.quorum import (
    assigned_rule,
    eligible_rules,
    for_clicker,
    is_eligible,
    tally,
    would_help,
)
from bot.domain.text import control_character_refusal, is_blank


class RefusalCode(StrEnum):
    DECIDED = "decided"
    ALREADY_VOTED = "already_voted"
    REASON_REQUIRED = "reason_required"
    NOT_ELIGIBLE = "not_eligible"
    REQUESTER = "requester"
    FROZEN = "frozen"
    NOT_NEEDED = "not_needed"
    CHECKING_REQUESTER = "checking_requester"  # not monotone: never answered from a cache
    UNVERIFIED = "unverified"  # Slack does not vouch for the person, or the click's origin


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a vote was not recorded; `message` is the exact sentence shown to the person clicking:
    a `Mrkdwn` when it mentions someone (bot/domain/mrkdwn.py), else plain text (shown escaped)."""

    code: RefusalCode
    message: str


def check_vote(
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    *,
    voter: str,
    kind: VoteKind,
    now: datetime,
    actor: str | None = None,
    frozen_reason: str | None = None,
    reason: str | None = None,
    require_reason: bool = True,
) -> Refusal | None:
    """None when the vote may be recorded, else the first refusal in this order:

    1. DECIDED — a decided request is final; nothing about the person matters any more.
    2. ALREADY_VOTED — the most specific fact about this person, and the answer to a double click
       (telling someone who filled a rule that it is "not needed" would be confusing).
    3. REASON_REQUIRED — a property of the submission, not of the person: the rejection modal can
       show it as a field error and stay open. Also a reason holding a control character, and a
       rejection reason with nothing visible in it (zero-width characters only). Pass
       `require_reason=False` to pre-check a Reject click before the modal is opened
       (eligibility is then already checked once).
    4. NOT_ELIGIBLE — the most fundamental personal reason; for a requester who is no approver
       anyway, "you are not an approver" is the truer answer.
    5. REQUESTER — permanent for this request, so it comes before the freeze: telling the requester
       to wait for the freeze to end would mislead them.
    6. CHECKING_REQUESTER — Quorum could not yet ask Slack who requested it: no approval counts
       until it knows (separation of duties fails closed); rejections still count.
    7. FROZEN — temporary and request-wide; only approvals are paused, rejections still count.
    8. NOT_NEEDED — depends on everyone else's votes, the most volatile fact, so it comes last.

    An exclusion (`Rule.excluded`, e.g. whoever broke glass) binds the person clicking as well as
    the person they vote for: a delegate who broke glass cannot fill the extra rule as someone
    else.

    `voter` is the person whose eligibility counts; `actor` the person who clicked, when they vote
    on behalf of `voter` under a delegation. A person counts once per request, as themselves or as a
    delegate, and a delegate may never vote on a request they requested.
    """
    on_behalf = actor is not None and actor != voter
    clicker = actor if actor is not None else voter
    votes = _ballot_of(request, votes)

    if not request.state.is_open:
        return _decided(request, now)

    previous = votes.previous(voter, clicker)
    if previous is not None:
        return _already_voted(previous, voter=voter, clicker=clicker, now=now)

    # A control character is refused in any reason (PostgreSQL cannot store NUL); "present"
    # means visible: zero-width characters alone are no reason.
    if (refused := control_character_refusal("The reason", reason)) is not None:
        return Refusal(RefusalCode.REASON_REQUIRED, refused)
    if kind is VoteKind.REJECT and require_reason and is_blank(reason):
        return Refusal(
            RefusalCode.REASON_REQUIRED,
            "A rejection needs a reason: say what is wrong so the requester knows what to fix.",
        )

    if not is_eligible(request.rules, eligible, voter):
        return Refusal(RefusalCode.NOT_ELIGIBLE, _not_eligible_message(request, voter, on_behalf))
    rules = for_clicker(request.rules, voter, clicker) if on_behalf else request.rules
    if on_behalf and not is_eligible(rules, eligible, voter):
        barred = [r.name for r in request.rules if clicker in r.excluded]
        return Refusal(
            RefusalCode.NOT_ELIGIBLE,
            md(
                "You broke glass on this request, so {} must come from someone else, not even "
                "from you on behalf of {}.",
                ", ".join(barred),
                mrkdwn.user(voter),
            ),
        )

    requester = request.requester.slack_user
    if requester is not None:
        if on_behalf and clicker == requester:
            return Refusal(
                RefusalCode.REQUESTER,
                md(
                    "You requested this deployment, so you cannot vote on it, not even on behalf "
                    "of {}.",
                    mrkdwn.user(voter),
                ),
            )
        if kind is VoteKind.APPROVE and not request.self_approval and voter == requester:
            return Refusal(RefusalCode.REQUESTER, _requester_message(request, voter, on_behalf))

    if kind is VoteKind.APPROVE and request.requester.checking:
        return Refusal(
            RefusalCode.CHECKING_REQUESTER,
            "Quorum is still checking with Slack who requested this deployment, so no approval "
            "can count yet (the requester may not approve their own change). Try again shortly.",
        )

    if kind is VoteKind.APPROVE and frozen_reason is not None:
        why = md(": {}", _sentence(frozen_reason)) if frozen_reason.strip() else ""
        return Refusal(
            RefusalCode.FROZEN,
            md(
                "Deployments to {} are frozen{}. Approvals are paused until the freeze ends.",
                request.environment,
                why,
            ),
        )

    if kind is VoteKind.APPROVE and not would_help(rules, eligible, votes, voter):
        return Refusal(RefusalCode.NOT_NEEDED, _not_needed_message(request, votes, eligible, voter))

    return None


def rule_for(
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    voter: str,
) -> str | None:
    """The rule an approval by `voter` would be assigned to if recorded now (for `Vote.rule`)."""
    return assigned_rule(request.rules, eligible, votes, voter)


def active_delegators(
    delegations: Sequence[Delegation], *, delegate: str, environment: str, now: datetime
) -> tuple[str, ...]:
    """The people `delegate` may vote for right now on a request to `environment`.

    Delegation does not chain: only delegations made directly to `delegate` count, so if Alice
    delegates to Bob and Bob to Carol, Carol may vote for Bob but not for Alice. In the order the
    delegations were created, without repeats.
    """
    found: dict[str, None] = {}
    for delegation in sorted(delegations, key=lambda d: d.created_at):
        if (
            delegation.delegate == delegate
            and delegation.delegator != delegate
            and delegation.starts_at <= now < delegation.ends_at
            and (delegation.revoked_at is None or now < delegation.revoked_at)
            and (not delegation.environments or environment in delegation.environments)
        ):
            found.setdefault(delegation.delegator, None)
    return tuple(found)


def resolve_voter(
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    delegations: Sequence[Delegation],
    *,
    actor: str,
    kind: VoteKind,
    now: datetime,
    frozen_reason: str | None = None,
    reason: str | None = None,
    require_reason: bool = True,
) -> str:
    """Whose vote a click by `actor` counts as: the actor, or someone who delegated to them.

    The actor's own vote comes first; otherwise the first active delegator whose vote would be
    accepted. When none would be, the person whose refusal explains the most: the actor if they
    are an approver themselves (or hold no delegation), else their first eligible delegator.
    Pass the result as `voter` (and `actor` when different) to `check_vote`.
    """
    delegators = active_delegators(
        delegations, delegate=actor, environment=request.environment, now=now
    )
    if not delegators:
        return actor  # the common case: nobody delegated to the actor, no checks to run
    votes = _ballot_of(request, votes)
    for candidate in (actor, *delegators):
        refusal = check_vote(
            request,
            votes,
            eligible,
            voter=candidate,
            actor=None if candidate == actor else actor,
            kind=kind,
            now=now,
            frozen_reason=frozen_reason,
            reason=reason,
            require_reason=require_reason,
        )
        if refusal is None:
            return candidate
    if is_eligible(request.rules, eligible, actor):
        return actor
    return next((d for d in delegators if is_eligible(request.rules, eligible, d)), actor)


# --- messages -------------------------------------------------------------------------------------


def _when(at: datetime, now: datetime) -> str:
    """'at 14:02 UTC' today, 'on 3 Mar at 14:02 UTC' otherwise (Slack shows it to any timezone)."""
    at_utc = at.astimezone(UTC)
    if at_utc.date() == now.astimezone(UTC).date():
        return f"at {at_utc:%H:%M} UTC"
    return f"on {at_utc.day} {at_utc:%b %Y} at {at_utc:%H:%M} UTC"


def _sentence(text: str) -> Mrkdwn:
    """`text` (escaped unless it is a `Mrkdwn`) without surrounding space and final full stops."""
    return mrkdwn.strip(mrkdwn.strip(text), ".")


def _target(request: ApprovalRequest) -> str:
    return f"{request.service or 'this unowned service'} → {request.environment}"


def _decided(request: ApprovalRequest, now: datetime) -> Refusal:
    when = f" {_when(request.decided_at, now)}" if request.decided_at is not None else ""
    what = {
        RequestState.APPROVED: f"was already approved{when}",
        RequestState.REJECTED: f"was already rejected{when}",
        RequestState.EXPIRED: f"expired{when} without a decision",
        RequestState.CANCELLED: f"was cancelled{when}",
    }.get(request.state, f"is {request.state.value}")
    return Refusal(RefusalCode.DECIDED, md("This request {}; your vote was not recorded.", what))


def _ballot_of(request: ApprovalRequest, votes: Sequence[Vote]) -> Ballot:
    """The request's own votes as a Ballot (a Ballot of another request counts as none)."""
    if isinstance(votes, Ballot):
        return votes if not votes or votes[0].request_id == request.id else Ballot()
    return Ballot([vote for vote in votes if vote.request_id == request.id])


def _past(kind: VoteKind) -> str:
    return "approved" if kind is VoteKind.APPROVE else "rejected"


def _already_voted(previous: Vote, *, voter: str, clicker: str, now: datetime) -> Refusal:
    verb = _past(previous.kind)
    when = _when(previous.cast_at, now)
    by, for_ = previous.clicked_by, previous.voter
    once = "a person counts once per request, as themselves or on behalf of someone."
    by_, for__ = mrkdwn.user(by), mrkdwn.user(for_)
    if by == clicker and for_ == voter:
        message = (
            md("You already {} this request {}.", verb, when)
            if by == for_
            else md("You already {} this request on behalf of {} {}.", verb, for__, when)
        )
    elif by == clicker:
        as_whom = md("as yourself") if by == for_ else md("on behalf of {}", for__)
        message = md(
            "You already voted on this request: you {} it {} {}; {}", verb, as_whom, when, once
        )
    elif for_ == clicker:
        message = md("{} already {} this request on your behalf {}; {}", by_, verb, when, once)
    elif for_ == voter and by == for_:
        message = md("{} already {} this request {}.", mrkdwn.user(voter), verb, when)
    else:
        # Either someone else already voted for the voter, or the voter used their one vote as a
        # delegate for someone else: both humans are named so the clicker sees who counted.
        message = md(
            "{} already {} this request on behalf of {} {}; {}", by_, verb, for__, when, once
        )
    return Refusal(RefusalCode.ALREADY_VOTED, message)


def _rule_list(request: ApprovalRequest) -> str:
    return ", ".join(f"{rule.name} ({rule.team})" for rule in request.rules) or "no rules"


def _not_eligible_message(request: ApprovalRequest, voter: str, on_behalf: bool) -> Mrkdwn:
    barred = [rule.name for rule in request.rules if voter in rule.excluded]
    if barred and not on_behalf:
        return md(
            "You are not an approver for {}: you broke glass on it, so {} must come from "
            "someone else.",
            _target(request),
            ", ".join(barred),
        )
    who = (
        md("{}, on whose behalf you are voting, is", mrkdwn.user(voter))
        if on_behalf
        else md("You are")
    )
    return md(
        "{} not an approver for {}. Eligible: {}.", who, _target(request), _rule_list(request)
    )


def _requester_message(request: ApprovalRequest, voter: str, on_behalf: bool) -> Mrkdwn:
    if on_behalf:
        return md(
            "{} is the requester of this deployment; {} requires someone else's approval, so "
            "you cannot approve on their behalf.",
            mrkdwn.user(voter),
            request.environment,
        )
    return md(
        "You are the requester of this deployment; {} requires someone else's approval.",
        request.environment,
    )


def _not_needed_message(
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    voter: str,
) -> Mrkdwn:
    names = ", ".join(rule.name for rule in eligible_rules(request.rules, eligible, voter))
    current = tally(request.rules, eligible, votes, request.reject_mode)
    you_can = md("The rules you can approve for ({}) are already satisfied", names)
    if current.waiting_on:
        return md("{}; waiting on {}.", you_can, ", ".join(current.waiting_on))
    return md("{}; every rule is met and the request is being approved.", you_can)
