"""Bolt listeners for /freeze, /unfreeze and /approvals, and the card's Break glass button/modal.

Thin: parse the text (handlers/slash_parser.py) → one service call → a reply that only the
person typing sees (ephemeral), except a started or ended freeze, which the channel sees.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.background import BackgroundTasks
from bot.domain.errors import DomainError
from bot.domain.freezes import FreezeWindow
from bot.domain.model import ApprovalRequest, Delegation
from bot.domain.when import describe
from bot.ports import Chat
from bot.services import breakglass, delegations, freezes
from bot.services.commands import pending_for
from bot.services.deps import Deps
from bot.services.voting import Voting
from handlers.action_ids import REASON_ACTION_ID, ActionId, BlockId, CallbackId, decode_button_value
from handlers.blocks import break_glass_reason_modal, escape_mrkdwn
from handlers.errors import correlation_id
from handlers.slash_parser import (
    APPROVALS_HELP,
    BreakGlassCommand,
    DelegateCommand,
    DelegationsCommand,
    FreezeListCommand,
    HelpCommand,
    ParseError,
    PendingCommand,
    ReviewCommand,
    UndelegateCommand,
    parse_approvals,
    parse_freeze,
    parse_unfreeze,
)

log = logging.getLogger(__name__)

Reply = tuple[str, bool]  # (text, visible to the channel)


def register(
    bolt: AsyncApp, *, deps: Deps, voting: Voting, chat: Chat, background: BackgroundTasks
) -> None:
    environments = tuple(deps.policy.environments)
    services = tuple(deps.policy.services)

    async def answer(
        ack: AsyncAck, command: dict[str, Any], run: Callable[[str, str], Awaitable[Reply]]
    ) -> None:
        user = str(command.get("user_id", ""))
        try:
            text, public = await run(user, str(command.get("text", "")))
        except (ParseError, DomainError) as exc:
            text, public = exc.message, False
        except Exception:
            cid = correlation_id()
            log.exception("slash command %s failed [%s]", command.get("command"), cid)
            text, public = f"Something went wrong on Quorum's side (reference {cid}).", False
        await ack(response_type="in_channel" if public else "ephemeral", text=text)

    async def freeze(user: str, text: str) -> Reply:
        parsed = parse_freeze(text, environments=environments, services=services)
        zone = await freezes.user_zone(deps, user)
        now = deps.clock.now()
        if isinstance(parsed, FreezeListCommand):
            return _freeze_list(await freezes.list_freezes(deps, now), zone, now), False
        started = await freezes.start_freeze(
            deps,
            actor=user,
            environments=parsed.environments,
            services=parsed.services,
            until=parsed.until,
            reason=parsed.reason,
        )
        f = started.freeze
        until = f"until {describe(f.ends_at, zone, now)}" if f.ends_at else "until further notice"
        where = ", ".join(f"<#{c}>" for c in started.channels)
        return (
            f":snowflake: <@{user}> froze deployments "
            f"{freezes.scope_text(f.environments, f.services)} {until}: "
            f"{escape_mrkdwn(f.reason)} (`{f.id}`; announced in {where}). "
            f"End it early with `/unfreeze {f.id}`.",
            True,
        )

    async def unfreeze(user: str, text: str) -> Reply:
        parsed = parse_unfreeze(text)
        ended = await freezes.end_freezes(deps, actor=user, target=parsed.target)
        zone = await freezes.user_zone(deps, user)
        now = deps.clock.now()
        lines: list[str] = []
        if ended.freezes:
            names = ", ".join(
                f"`{f.id}` ({freezes.scope_text(f.environments, f.services)})"
                for f in ended.freezes
            )
            lines.append(f":sunny: <@{user}> ended {names}.")
        else:
            lines.append(f"No ad-hoc freeze covers {escape_mrkdwn(parsed.target)}.")
        for window in ended.still_frozen_by:
            ends = describe(window.ends_at, zone, now) if window.ends_at else "further notice"
            lines.append(
                f"Still frozen by the calendar window *{window.recurring}* until {ends} "
                "(from the policy; a release manager can break glass for an urgent deploy)."
            )
        return "\n".join(lines), bool(ended.freezes)

    async def approvals(user: str, text: str) -> Reply:
        parsed = parse_approvals(text, environments=environments)
        zone = await freezes.user_zone(deps, user)
        now = deps.clock.now()
        if isinstance(parsed, HelpCommand):
            if parsed.unknown is None:
                return APPROVALS_HELP, False
            unknown = escape_mrkdwn(parsed.unknown)
            return f"I don't know `/approvals {unknown}`.\n{APPROVALS_HELP}", False
        if isinstance(parsed, PendingCommand):
            return await _pending(deps, user, zone, now), False
        if isinstance(parsed, DelegateCommand):
            delegated = await delegations.delegate(
                deps,
                actor=user,
                to=parsed.delegate,
                until=parsed.until,
                environments=parsed.environments,
                changed=voting.forget_delegations,
            )
            made = delegated.delegation
            caveat = (
                f" It will not be honoured in {', '.join(delegated.not_honoured_in)} "
                "(the policy's delegation.not_honoured_in)."
                if delegated.not_honoured_in
                else ""
            )
            return (
                f"<@{made.delegate}> may now vote on your behalf "
                f"{_envs(made.environments)} until {describe(made.ends_at, zone, now)} "
                f"(`{made.id}`).{caveat} End it with `/approvals undelegate`.",
                False,
            )
        if isinstance(parsed, DelegationsCommand):
            mine = await delegations.my_delegations(deps, actor=user)
            return _delegations_text(mine.given, mine.received, zone, now), False
        if isinstance(parsed, UndelegateCommand):
            revoked = await delegations.undelegate(
                deps, actor=user, to=parsed.delegate, changed=voting.forget_delegations
            )
            names = ", ".join(f"<@{d.delegate}>" for d in revoked)
            return f"Ended your delegation to {names}.", False
        if isinstance(parsed, BreakGlassCommand):
            request = await breakglass.break_glass(
                deps,
                request_id=parsed.request_id,
                actor=user,
                reason=parsed.reason,
                forget=voting.forget_request,
            )
            return _broken_text(request), False
        if isinstance(parsed, ReviewCommand):
            request = await breakglass.record_review(
                deps, request_id=parsed.request_id, actor=user, summary=parsed.summary
            )
            return f"Recorded the post-incident review of `{request.id}`. Thank you.", False
        raise AssertionError(f"unhandled command {parsed!r}")  # pragma: no cover

    async def handle_freeze_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await answer(ack, command, freeze)

    async def handle_unfreeze_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await answer(ack, command, unfreeze)

    async def handle_approvals_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        await answer(ack, command, approvals)

    async def handle_break_glass_action(ack: AsyncAck, body: dict[str, Any]) -> None:
        user = str((body.get("user") or {}).get("id", ""))
        actions = body.get("actions") or []
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        try:
            request_id = decode_button_value(str(actions[0].get("value", ""))) if actions else ""
        except ValueError:
            request_id = ""
        if not request_id or not user:
            await ack()
            return
        try:
            request = await breakglass.may_break_glass(deps, request_id, user)
        except DomainError as exc:
            await ack()
            if channel:
                background.spawn(
                    chat.post_ephemeral(str(channel), user, exc.message),
                    name=f"break-glass-refusal:{request_id}:{user}",
                )
            return
        await ack()
        trigger = body.get("trigger_id")
        if trigger:
            summary = (
                f"Break glass on {request.service or 'this deployment'} → {request.environment}"
                f"{' ' + request.details.version if request.details.version else ''}: the freeze "
                "is overridden for this request and the policy's extra approvals are added."
            )
            # trigger_id expires 3 s after the click: open the modal right after the ack.
            background.spawn(
                chat.open_modal(str(trigger), break_glass_reason_modal(request.id, summary)),
                name=f"break-glass-modal:{request_id}",
            )

    async def handle_break_glass_submission(ack: AsyncAck, body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        user = str((body.get("user") or {}).get("id", ""))
        values = (view.get("state") or {}).get("values") or {}
        reason = ((values.get(BlockId.reason.value) or {}).get(REASON_ACTION_ID) or {}).get("value")
        try:
            request_id = decode_button_value(str(view.get("private_metadata", "")))
            await breakglass.break_glass(
                deps,
                request_id=request_id,
                actor=user,
                reason=str(reason or ""),
                forget=voting.forget_request,
            )
        except ValueError:
            await ack(
                response_action="errors",
                errors={
                    BlockId.reason.value: "This form is no longer valid; press the button "
                    "on the card again."
                },
            )
            return
        except DomainError as exc:
            await ack(response_action="errors", errors={BlockId.reason.value: exc.message[:150]})
            return
        await ack()

    bolt.command("/freeze")(handle_freeze_command)
    bolt.command("/unfreeze")(handle_unfreeze_command)
    bolt.command("/approvals")(handle_approvals_command)
    bolt.action(ActionId.break_glass.value)(handle_break_glass_action)
    bolt.view(CallbackId.break_glass_reason.value)(handle_break_glass_submission)


# --- rendering ------------------------------------------------------------------------------------


def _envs(environments: tuple[str, ...]) -> str:
    return f"in {', '.join(environments)}" if environments else "in every environment"


def _freeze_list(windows: list[FreezeWindow], zone: ZoneInfo, now: datetime) -> str:
    if not windows:
        return "No freezes are active or scheduled."
    lines = ["*Freezes* (times in your time zone):"]
    for w in windows:
        scope = freezes.scope_text(w.environments, w.services)
        ends = describe(w.ends_at, zone, now) if w.ends_at else "further notice"
        if w.active_at(now):
            when = f":snowflake: *now* until {ends}"
        else:
            when = f"from {describe(w.starts_at, zone, now)} until {ends}"
        who = f"by <@{w.created_by}> (`{w.id}`)" if w.created_by else f"calendar *{w.recurring}*"
        lines.append(f"• {when} {scope}, {who}: {escape_mrkdwn(w.reason)}")
    return "\n".join(lines)


def _card_link(request: ApprovalRequest) -> str:
    title = escape_mrkdwn(
        f"{request.service or 'unknown service'} → {request.environment}"
        + (f" {request.details.version}" if request.details.version else "")
    )
    if request.message_ts is None:
        return f"{title} (`{request.id}`, card not posted yet)"
    ts = request.message_ts.replace(".", "")
    return f"<https://slack.com/archives/{request.channel}/p{ts}|{title}> (`{request.id}`)"


async def _pending(deps: Deps, user: str, zone: ZoneInfo, now: datetime) -> str:
    found = await pending_for(deps, user)
    lines: list[str] = []
    if found.waiting:
        lines.append(f"*Waiting on you* ({len(found.waiting)}):")
        for item in found.waiting:
            frozen = " — :snowflake: frozen, approvable when the freeze ends" if item.frozen else ""
            lines.append(f"• {_card_link(item.request)}{frozen}")
    else:
        lines.append("Nothing is waiting on you.")
    if found.reviews:
        lines.append("*Post-incident reviews to record* (break glass):")
        for request in found.reviews:
            due = request.review_due_at
            overdue = due is not None and due <= now
            when = describe(due, zone, now) if due else "no deadline"
            flag = ":warning: *overdue*, was due" if overdue else "due"
            lines.append(
                f"• {_card_link(request)} {flag} {when}: `/approvals review {request.id} <summary>`"
            )
    return "\n".join(lines)


def _delegations_text(
    given: tuple[Delegation, ...], received: tuple[Delegation, ...], zone: ZoneInfo, now: datetime
) -> str:
    lines: list[str] = []
    if given:
        lines.append("*You delegated to:*")
        lines += [
            f"• <@{d.delegate}> {_envs(d.environments)} until {describe(d.ends_at, zone, now)}"
            for d in given
        ]
    if received:
        lines.append("*You may vote on behalf of:*")
        lines += [
            f"• <@{d.delegator}> {_envs(d.environments)} until {describe(d.ends_at, zone, now)}"
            for d in received
        ]
    return "\n".join(lines) or "You have no delegations, and nobody delegated to you."


def _broken_text(request: ApprovalRequest) -> str:
    extra = [r for r in request.rules if r.origin == "break-glass"]
    needs = ", ".join(f"{r.name} ({r.approvals} from {r.team})" for r in extra) or "none"
    return (
        f":rotating_light: Glass broken on `{request.id}`: the freeze no longer holds it; "
        f"extra approvals required: {needs}. It was announced in <#{request.channel}>."
    )
