"""Status reports to the pipeline while a request is pending (GitHub shows them on the run):
queued in the outbox at a few moments — card posted, a rule completed, an escalation — within
the provider's budget per deployment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

from bot.domain.model import ApprovalRequest, Delivery, Vote
from bot.domain.quorum import Tally, tally
from bot.ports import UnitOfWork
from bot.services.deps import Deps
from bot.services.ids import new_id
from bot.services.jobs import Job

__all__ = [
    "PROGRESS",
    "ProgressReporter",
    "card_url",
    "on_card_posted",
    "on_escalation",
    "on_vote",
    "progress_comment",
    "report_progress",
]

PROGRESS: Final = "progress"  # Delivery.kind of a status report
COMMENT_LIMIT: Final = 1024


@runtime_checkable
class ProgressReporter(Protocol):
    """A notifier that can post status reports (GitHub). Others are simply not asked."""

    @property
    def progress_budget(self) -> int:
        """How many reports one deployment may receive."""
        ...

    def progress_payload(
        self, request: ApprovalRequest, comment: str
    ) -> Mapping[str, Any] | None: ...


def card_url(channel: str, ts: str) -> str:
    """A link to the Slack card: slack.com/archives redirects to the message in its workspace."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def progress_comment(request: ApprovalRequest, current: Tally, headline: str, link: str) -> str:
    """Markdown, at most 1024 characters: `2/3 approvals — waiting on sre` plus each rule."""
    summary = f"{current.filled}/{current.needed} approvals"
    if current.waiting_on:
        summary += f" — waiting on {', '.join(current.waiting_on)}"
    rules = [
        f"- {p.rule.name} ({p.rule.team}): {len(p.approvers)}/{p.rule.approvals}"
        + (" ✅" if p.met else "")
        for p in current.rules
    ]
    tail = f"\n\n[Open the approval card in Slack]({link})"
    head = f"**Quorum** · {headline}\n\n{summary}\n\n"
    body = "\n".join(rules)
    room = COMMENT_LIMIT - len(head) - len(tail)
    if len(body) > room:
        body = body[: max(room - 1, 0)] + "…"
    return head + body + tail


async def report_progress(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    current: Tally,
    headline: str,
    now: datetime,
    *,
    channel: str | None = None,
    ts: str | None = None,
) -> bool:
    """Queue a status report in `uow` when the request's pipeline takes them and the budget
    allows. True when one was queued."""
    if not request.state.is_open:
        return False
    notifier = deps.notifiers.get(request.source)
    if not isinstance(notifier, ProgressReporter):
        return False
    channel = channel or request.channel
    ts = ts or request.message_ts
    if ts is None:
        return False  # no card to link to yet; the first report goes out when it is posted
    if await uow.outbox.count_for_request(request.id, PROGRESS) >= notifier.progress_budget:
        return False
    payload = notifier.progress_payload(
        request, progress_comment(request, current, headline, card_url(channel, ts))
    )
    if payload is None:
        return False
    await uow.outbox.add(
        Delivery(
            id=new_id("dlv", now),
            request_id=request.id,
            target=request.source,
            payload=dict(payload),
            created_at=now,
            next_attempt_at=now,
            kind=PROGRESS,
        )
    )
    deps.wake(Job.DELIVERIES)
    return True


async def on_card_posted(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    current: Tally,
    channel: str,
    ts: str,
    now: datetime,
) -> bool:
    return await report_progress(
        deps, uow, request, current, "waiting for approval in Slack", now, channel=channel, ts=ts
    )


async def on_vote(
    deps: Deps,
    uow: UnitOfWork,
    request: ApprovalRequest,
    votes: Sequence[Vote],
    eligible: Mapping[str, frozenset[str]],
    now: datetime,
    *,
    after: Tally | None = None,
) -> bool:
    """After a vote (the last of `votes`): report when it completed a rule of a pending request.
    `after` is the tally including that vote, when the caller already has it."""
    if not request.state.is_open or not votes:
        return False
    if after is None:
        after = tally(request.rules, eligible, votes, request.reject_mode)
    if not any(p.met for p in after.rules):
        return False  # nothing can have just completed (the common case: no second tally)
    before = tally(request.rules, eligible, votes[:-1], request.reject_mode)
    completed = [
        now_.rule.name
        for was, now_ in zip(before.rules, after.rules, strict=True)
        if now_.met and not was.met
    ]
    if not completed:
        return False
    headline = f"{', '.join(completed)} complete"
    return await report_progress(deps, uow, request, after, headline, now)


async def on_escalation(
    deps: Deps, uow: UnitOfWork, request: ApprovalRequest, current: Tally, now: datetime
) -> bool:
    """For the SLA sweep: one report per escalation step."""
    headline = f"escalated (level {request.escalation_level})"
    return await report_progress(deps, uow, request, current, headline, now)
