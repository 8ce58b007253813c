"""Pure Block Kit rendering of approval cards, thread replies and modals (no I/O, no policy).

Everything a pipeline or a person typed is escaped (`&`, `<`, `>`) so it cannot ping `@channel` or
forge a link, and cut to Slack's limits so that Slack never rejects a card for its size. The texts
it returns are `Mrkdwn` (bot/domain/mrkdwn.py), the only text the `Chat` port sends; a note given
as a plain `str` is escaped whole, one given as `Mrkdwn` (built with the mentions Quorum means) is
shown as it is. This module and bot/domain/mrkdwn.py are the only ones that build `Mrkdwn`
directly (tests/unit/test_mrkdwn.py checks it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bot.domain import mrkdwn
from bot.domain.model import ApprovalRequest, Link, RequestState, Vote, VoteKind
from bot.domain.mrkdwn import Mrkdwn
from bot.domain.quorum import Tally
from handlers.action_ids import (
    REASON_ACTION_ID,
    ActionId,
    BlockId,
    CallbackId,
    encode_button_value,
)

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks).
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_BUTTON_TEXT = 75
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 2000
MAX_MODAL_TITLE = 24
MAX_MODAL_BUTTON = 24
MAX_PLACEHOLDER = 150
MAX_LABEL = 2000
# chat.postMessage accepts far more, but the fallback text is a notification line, not a document.
MAX_FALLBACK_TEXT = 3000

ELLIPSIS = "…"
TRUNCATED_MARKER = f"{ELLIPSIS} _(truncated)_"
SHA_LENGTH = 12
REASON_MIN_LENGTH = 3
REASON_MAX_LENGTH = 1000

# A cut must not leave half an HTML entity (`&am`) behind.
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,4}$")


@dataclass(frozen=True, slots=True)
class CardMessage:
    """A rendered card: `text` is the notification / fallback text, `blocks` the Block Kit body."""

    text: Mrkdwn
    blocks: list[dict[str, Any]]


# --- text helpers -------------------------------------------------------------------------------


def _truncate(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """`text` cut to at most `limit` characters, ending in `marker` when something was cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return marker[:limit]
    head = text[: limit - len(marker)]
    # Do not end inside an escape sequence produced by escape_mrkdwn.
    head = _PARTIAL_ENTITY.sub("", head)
    return head.rstrip() + marker


def escape_mrkdwn(text: str) -> Mrkdwn:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return mrkdwn.escape(text)


def _note(text: str) -> str:
    """A note for the card: a `Mrkdwn` as it is (its mentions are Quorum's), any other text
    escaped whole (a forged `<@U…>` in it mentions nobody)."""
    return mrkdwn.as_mrkdwn(text)


def _plain_inline(text: str) -> str:
    """User text for one mrkdwn line: escaped, with line breaks folded to spaces."""
    return escape_mrkdwn(" ".join(text.split()))


def mention(user: str) -> str:
    """A Slack user mention of a well-formed id (`U…`/`W…`); anything else is shown escaped."""
    return mrkdwn.user(user)


def _who(vote: Vote) -> str:
    """`<@voter>`, or `<@actor> on behalf of <@voter>` for a delegated vote."""
    if vote.actor and vote.actor != vote.voter:
        return f"{mention(vote.actor)} on behalf of {mention(vote.voter)}"
    return mention(vote.voter)


def _format_time(at: datetime, now: datetime) -> str:
    """`14:02 UTC` on the day of `now`, else `2026-03-01 14:02 UTC`."""
    at_utc = at.astimezone(UTC)
    if at_utc.date() == now.astimezone(UTC).date():
        return at_utc.strftime("%H:%M UTC")
    return at_utc.strftime("%Y-%m-%d %H:%M UTC")


def _link(link: Link) -> str:
    """`<url|text>` for an http(s) URL Slack can render; the escaped text alone otherwise."""
    text = _truncate(_plain_inline(link.text or link.url), 200)
    url = link.url.strip()
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c in url for c in "<>| \t\r\n")
        or len(url) > 1000
    ):
        return text
    return f"<{url.replace('&', '&amp;')}|{text}>"


# --- block builders -----------------------------------------------------------------------------


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _truncate(text, limit), "emoji": True}


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "section",
        "text": _mrkdwn(_truncate(text, MAX_SECTION_TEXT, TRUNCATED_MARKER)),
    }
    if block_id:
        block["block_id"] = block_id
    return block


def _button(text: str, action_id: ActionId, value: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": _plain(text, MAX_BUTTON_TEXT),
        "action_id": str(action_id),
        "value": value,
    }
    if style:
        button["style"] = style
    return button


# --- the card -----------------------------------------------------------------------------------


def _title(request: ApprovalRequest) -> str:
    version = f" {request.details.version}" if request.details.version else ""
    return f"{request.service or 'unknown service'} → {request.environment}{version}"


def progress_line(tally: Tally, *, pending: bool = True) -> str:
    """`owner-review 1/2 · sre-signoff 0/1 — waiting on sre` (escaped for mrkdwn)."""
    parts = [f"{p.rule.name} {len(p.approvers)}/{p.rule.approvals}" for p in tally.rules]
    line = " · ".join(parts) if parts else "no approval rules"
    waiting = tally.waiting_on
    if pending and waiting:
        line += f" — waiting on {', '.join(waiting)}"
    return escape_mrkdwn(line)


def _approvers_lines(tally: Tally, votes: Sequence[Vote]) -> list[str]:
    by_voter = {v.voter: v for v in votes if v.kind is VoteKind.APPROVE}
    lines: list[str] = []
    for progress in tally.rules:
        if not progress.approvers:
            continue
        names = [
            _who(by_voter[voter]) if voter in by_voter else mention(voter)
            for voter in progress.approvers
        ]
        lines.append(f"• {escape_mrkdwn(progress.rule.name)}: approved by {', '.join(names)}")
    return lines


def escalation_text(request: ApprovalRequest) -> str:
    """Who an escalation lets approve what, read from the rules (`Rule.widened_by`), so the
    card says what the vote path counts: `sre may also approve owner-review`."""
    by_team: dict[str, list[str]] = {}
    for rule in request.rules:
        for team in rule.widened_by:
            by_team.setdefault(team, []).append(rule.name)
    if not by_team:
        return "teams notified only (no rule widened)"
    return "; ".join(
        f"{escape_mrkdwn(team)} may also approve {escape_mrkdwn(', '.join(names))}"
        for team, names in by_team.items()
    )


def _rejection_text(vote: Vote) -> str:
    reason = f" — {_plain_inline(vote.reason)}" if vote.reason else ""
    return f"{_who(vote)}{reason}"


def _state_lines(request: ApprovalRequest, tally: Tally, now: datetime) -> list[str]:
    at = f" at {_format_time(request.decided_at, now)}" if request.decided_at else ""
    reason = _plain_inline(request.decision_reason) if request.decision_reason else None
    state = request.state
    if state is RequestState.APPROVED:
        return [f":white_check_mark: *Approved*{at}" + (f" — {reason}" if reason else "")]
    if state is RequestState.REJECTED:
        rejections = tally.rejections
        if len(rejections) == 1:
            vote = rejections[0]
            why = _plain_inline(vote.reason) if vote.reason else reason
            return [f":x: *Rejected* by {_who(vote)}{at}" + (f" — {why}" if why else "")]
        if rejections:
            lines = [f":x: *Rejected*{at} by:"]
            lines += [f"• {_rejection_text(v)}" for v in rejections]
            return lines
        return [f":x: *Rejected*{at}" + (f" — {reason}" if reason else "")]
    if state is RequestState.EXPIRED:
        return [f":hourglass: *Expired*{at}" + (f" — {reason}" if reason else "")]
    if state is RequestState.CANCELLED:
        return [f":no_entry_sign: *Cancelled*{at}" + (f" — {reason}" if reason else "")]
    # Pending: rejections recorded so far (reject mode `quorum` needs several).
    return [
        f":x: {_who(v)} rejected" + (f" — {_plain_inline(v.reason)}" if v.reason else "")
        for v in tally.rejections
    ]


def _fields(request: ApprovalRequest) -> dict[str, Any]:
    requester = request.requester
    who = (
        mention(requester.slack_user) if requester.slack_user else _plain_inline(requester.display)
    )
    details = request.details
    sha = f"`{_plain_inline(details.sha[:SHA_LENGTH]).replace('`', '')}`" if details.sha else "—"
    values = [
        ("Requested by", who),
        ("Change ticket", _plain_inline(details.change_ticket) if details.change_ticket else "—"),
        ("Risk", escape_mrkdwn(str(request.risk))),
        ("SHA", sha),
    ]
    return {
        "type": "section",
        "fields": [
            _mrkdwn(_truncate(f"*{label}*\n{value}", MAX_FIELD_TEXT))
            for label, value in values[:MAX_FIELDS]
        ],
    }


def _links_text(links: Iterable[Link]) -> str | None:
    rendered: list[str] = []
    all_links = list(links)
    used = len("*Links:* ")
    for index, link in enumerate(all_links):
        item = _link(link)
        # Add whole links only: a link cut in half would not render. Keep room for "and N more".
        if used + len(item) + 3 > MAX_SECTION_TEXT - 20:
            rendered.append(f"and {len(all_links) - index} more")
            break
        rendered.append(item)
        used += len(item) + 3
    return "*Links:* " + " · ".join(rendered) if rendered else None


def _description_text(request: ApprovalRequest) -> str | None:
    details = request.details
    parts: list[str] = []
    if details.title:
        # Keep the title short so that the description gets most of the section.
        parts.append(f"*{_truncate(_plain_inline(details.title), 300)}*")
    if details.description:
        parts.append(escape_mrkdwn(details.description.strip()))
    return "\n".join(parts) if parts else None


def render_card(
    request: ApprovalRequest,
    tally: Tally,
    votes: Sequence[Vote],
    *,
    callback_status: str | None = None,
    warnings: Sequence[str] = (),
    frozen_note: str | None = None,
    next_timer: str | None = None,
    offer_break_glass: bool = False,
    now: datetime,
) -> CardMessage:
    """The approval card of `request` as it stands (`tally` computed from `votes`).

    `warnings`, `frozen_note`, `next_timer` and `callback_status` are notes composed by Quorum; they
    may contain user mentions (`<@U123>`), any other markup is escaped. Buttons are shown only while
    the request is pending; Approve is left out while frozen (Block Kit buttons cannot be disabled).
    Break glass is offered on a frozen card, or when `offer_break_glass` is set.
    """
    pending = request.state is RequestState.PENDING
    title = _title(request)
    # The block count is bounded by construction (at most 12 blocks), far below MAX_BLOCKS.
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(title, MAX_HEADER)}]

    if warnings:
        blocks.append(_section("\n".join(_note(w) for w in warnings)))

    description = _description_text(request)
    if description:
        blocks.append(_section(description))

    blocks.append(_fields(request))

    links = _links_text(request.details.links)
    if links:
        blocks.append(_section(links))

    progress = [f"*Approvals:* {progress_line(tally, pending=pending)}"]
    progress += _approvers_lines(tally, votes)
    if request.escalation_level:
        progress.append(
            f":rotating_light: Escalated (level {request.escalation_level}): "
            f"{escalation_text(request)}"
        )
    if request.break_glass:
        progress.append(":fire_engine: *Break glass*: extra approvals required")
    blocks.append(_section("\n".join(progress)))

    status = _state_lines(request, tally, now)
    if frozen_note and pending:
        status.append(f":snowflake: {_note(frozen_note)}")
    if next_timer and pending:
        status.append(f":alarm_clock: {_note(next_timer)}")
    if callback_status:
        status.append(f":satellite_antenna: Callback: {_note(callback_status)}")
    if status:
        blocks.append(_section("\n".join(status)))

    if pending:
        value = encode_button_value(request.id)
        buttons: list[dict[str, Any]] = []
        if not frozen_note:
            buttons.append(_button("Approve", ActionId.approve, value, "primary"))
        buttons.append(_button("Reject", ActionId.reject, value, "danger"))
        if (frozen_note or offer_break_glass) and not request.break_glass:
            buttons.append(_button("Break glass", ActionId.break_glass, value, None))
        blocks.append({"type": "actions", "block_id": str(BlockId.actions), "elements": buttons})

    context = [
        _mrkdwn(_truncate(f"Request `{_plain_inline(request.id)}`", MAX_CONTEXT_TEXT)),
        _mrkdwn(_truncate(f"via {_plain_inline(request.source)}", MAX_CONTEXT_TEXT)),
    ]
    blocks.append({"type": "context", "elements": context[:MAX_CONTEXT_ELEMENTS]})

    state_word = "awaiting approval" if pending else str(request.state)
    fallback = f"Deployment {escape_mrkdwn(title)}: {state_word}"
    return CardMessage(
        text=Mrkdwn(_truncate(fallback, MAX_FALLBACK_TEXT)), blocks=blocks[:MAX_BLOCKS]
    )


# --- thread replies -----------------------------------------------------------------------------


def render_vote_reply(vote: Vote) -> Mrkdwn:
    """The thread reply recording one vote."""
    actor_part = mention(vote.clicked_by)
    on_behalf = (
        f" on behalf of {mention(vote.voter)}" if vote.actor and vote.actor != vote.voter else ""
    )
    if vote.kind is VoteKind.APPROVE:
        rule = f" ({escape_mrkdwn(vote.rule)})" if vote.rule else ""
        text = f":white_check_mark: {actor_part} approved{on_behalf}{rule}"
    else:
        reason = f": {escape_mrkdwn(vote.reason.strip())}" if vote.reason else ""
        text = f":x: {actor_part} rejected{on_behalf}{reason}"
    return Mrkdwn(_truncate(text, MAX_SECTION_TEXT, TRUNCATED_MARKER))


def render_vote_replies(votes: Sequence[Vote]) -> Mrkdwn:
    """One thread reply recording several votes, a line each, in the order given."""
    if not votes:
        raise ValueError("no votes to render")
    return mrkdwn.join("\n", (render_vote_reply(vote) for vote in votes))


def render_decision_reply(request: ApprovalRequest, tally: Tally) -> Mrkdwn:
    """The thread reply announcing the decision (mentions the requester when known)."""
    state = request.state if request.state is not RequestState.PENDING else tally.outcome
    requester = f" {mention(request.requester.slack_user)}" if request.requester.slack_user else ""
    reason = f": {_plain_inline(request.decision_reason)}" if request.decision_reason else ""
    what = escape_mrkdwn(_title(request))
    if state is RequestState.APPROVED:
        text = (
            f":white_check_mark: *Approved* ({progress_line(tally, pending=False)})."
            f"{requester} {what} may proceed."
        )
    elif state is RequestState.REJECTED:
        if tally.rejections and not reason:
            vote = tally.rejections[0]
            why = f": {_plain_inline(vote.reason)}" if vote.reason else ""
            text = f":x: *Rejected* by {_who(vote)}{why}.{requester} {what} will not proceed."
        else:
            text = f":x: *Rejected*{reason}.{requester} {what} will not proceed."
    elif state is RequestState.EXPIRED:
        text = f":hourglass: *Expired*{reason}.{requester} {what} will not proceed."
    elif state is RequestState.CANCELLED:
        text = f":no_entry_sign: *Cancelled*{reason}.{requester}"
    else:
        text = f":hourglass_flowing_sand: Still waiting: {progress_line(tally)}"
    return Mrkdwn(_truncate(text, MAX_SECTION_TEXT, TRUNCATED_MARKER))


# --- modals -------------------------------------------------------------------------------------


def _reason_modal(
    callback_id: CallbackId, request_id: str, summary: str, title: str, submit: str, label: str
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": str(callback_id),
        "private_metadata": encode_button_value(request_id),
        "title": _plain(title, MAX_MODAL_TITLE),
        "submit": _plain(submit, MAX_MODAL_BUTTON),
        "close": _plain("Cancel", MAX_MODAL_BUTTON),
        "blocks": [
            _section(escape_mrkdwn(summary)),
            {
                "type": "input",
                "block_id": str(BlockId.reason),
                "optional": False,
                "label": _plain(label, MAX_LABEL),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION_ID,
                    "multiline": True,
                    "min_length": REASON_MIN_LENGTH,
                    "max_length": REASON_MAX_LENGTH,
                    "placeholder": _plain("Tell the requester why", MAX_PLACEHOLDER),
                },
            },
        ],
    }


def reject_reason_modal(request_id: str, summary: str) -> dict[str, Any]:
    """The `views.open` view asking for the reason of a rejection (required, 3–1000 chars)."""
    return _reason_modal(
        CallbackId.reject_reason, request_id, summary, "Reject deployment", "Reject", "Reason"
    )


def break_glass_reason_modal(request_id: str, summary: str) -> dict[str, Any]:
    """The `views.open` view asking why the freeze / normal approval is being broken."""
    return _reason_modal(
        CallbackId.break_glass_reason,
        request_id,
        summary,
        "Break glass",
        "Break glass",
        "Why is this needed now?",
    )
