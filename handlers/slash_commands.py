"""Bolt listeners for /freeze, /unfreeze and /approvals, and the card's Break glass button/modal.

Thin: parse the text (handlers/slash_parser.py) → one service call → a reply that only the
person typing sees (ephemeral), except a started or ended freeze, which the channel sees.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.background import BackgroundTasks
from bot.domain.errors import DomainError
from bot.domain.mrkdwn import Mrkdwn, as_mrkdwn
from bot.ports import Chat
from bot.services import breakglass, delegations, freezes
from bot.services.commands import pending_for
from bot.services.deps import Deps
from bot.services.voting import Voting
from handlers import slack_text
from handlers.action_ids import REASON_ACTION_ID, ActionId, BlockId, CallbackId, decode_button_value
from handlers.blocks import break_glass_reason_modal
from handlers.errors import correlation_id
from handlers.slack_actions import channel_of
from handlers.slack_payloads import BlockActions, SlashCommand, ViewSubmission, payload_of
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

Reply = tuple[Mrkdwn, bool]  # (text, visible to the channel), rendered by handlers/slack_text.py


def register(
    bolt: AsyncApp, *, deps: Deps, voting: Voting, chat: Chat, background: BackgroundTasks
) -> None:
    environments = tuple(deps.policy.environments)
    services = tuple(deps.policy.services)

    async def answer(
        ack: AsyncAck, context: AsyncBoltContext, run: Callable[[str, str], Awaitable[Reply]]
    ) -> None:
        command = payload_of(context, SlashCommand)
        try:
            text, public = await run(command.user_id, command.text)
        except (ParseError, DomainError) as exc:
            text, public = as_mrkdwn(exc.message), False  # plain text is shown escaped
        except Exception:
            cid = correlation_id()
            log.exception("slash command %s failed [%s]", command.command, cid)
            text, public = slack_text.internal_error(cid), False
        await ack(response_type="in_channel" if public else "ephemeral", text=as_mrkdwn(text))

    async def freeze(user: str, text: str) -> Reply:
        parsed = parse_freeze(text, environments=environments, services=services)
        zone = await freezes.user_zone(deps, user)
        now = deps.clock.now()
        if isinstance(parsed, FreezeListCommand):
            return slack_text.freeze_list(await freezes.list_freezes(deps, now), zone, now), False
        started = await freezes.start_freeze(
            deps,
            actor=user,
            environments=parsed.environments,
            services=parsed.services,
            until=parsed.until,
            reason=parsed.reason,
        )
        return slack_text.freeze_started(user, started, zone, now), True

    async def unfreeze(user: str, text: str) -> Reply:
        parsed = parse_unfreeze(text)
        ended = await freezes.end_freezes(deps, actor=user, target=parsed.target)
        zone = await freezes.user_zone(deps, user)
        now = deps.clock.now()
        reply = slack_text.freeze_ended(user, parsed.target, ended, zone, now)
        return reply, bool(ended.freezes)

    async def approvals(user: str, text: str) -> Reply:
        parsed = parse_approvals(text, environments=environments)
        zone = await freezes.user_zone(deps, user)
        now = deps.clock.now()
        if isinstance(parsed, HelpCommand):
            return slack_text.help_text(APPROVALS_HELP, parsed.unknown), False
        if isinstance(parsed, PendingCommand):
            return slack_text.pending(await pending_for(deps, user), zone, now), False
        if isinstance(parsed, DelegateCommand):
            delegated = await delegations.delegate(
                deps,
                actor=user,
                to=parsed.delegate,
                until=parsed.until,
                environments=parsed.environments,
                changed=voting.forget_delegations,
            )
            return slack_text.delegated(delegated, zone, now), False
        if isinstance(parsed, DelegationsCommand):
            mine = await delegations.my_delegations(deps, actor=user)
            return slack_text.delegations(mine.given, mine.received, zone, now), False
        if isinstance(parsed, UndelegateCommand):
            revoked = await delegations.undelegate(
                deps, actor=user, to=parsed.delegate, changed=voting.forget_delegations
            )
            return slack_text.undelegated(revoked), False
        if isinstance(parsed, BreakGlassCommand):
            request = await breakglass.break_glass(
                deps,
                request_id=parsed.request_id,
                actor=user,
                reason=parsed.reason,
                forget=voting.forget_request,
            )
            return slack_text.glass_broken(request), False
        if isinstance(parsed, ReviewCommand):
            request = await breakglass.record_review(
                deps, request_id=parsed.request_id, actor=user, summary=parsed.summary
            )
            return slack_text.review_recorded(request), False
        raise AssertionError(f"unhandled command {parsed!r}")  # pragma: no cover

    async def handle_freeze_command(ack: AsyncAck, context: AsyncBoltContext) -> None:
        await answer(ack, context, freeze)

    async def handle_unfreeze_command(ack: AsyncAck, context: AsyncBoltContext) -> None:
        await answer(ack, context, unfreeze)

    async def handle_approvals_command(ack: AsyncAck, context: AsyncBoltContext) -> None:
        await answer(ack, context, approvals)

    async def handle_break_glass_action(ack: AsyncAck, context: AsyncBoltContext) -> None:
        payload = payload_of(context, BlockActions)
        user = payload.user.id
        channel = channel_of(payload)
        try:
            request_id = decode_button_value(payload.actions[0].value or "")
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
                    chat.post_ephemeral(str(channel), user, as_mrkdwn(exc.message)),
                    name=f"break-glass-refusal:{request_id}:{user}",
                )
            return
        await ack()
        trigger = payload.trigger_id
        if trigger:
            summary = (
                f"Break glass on {request.service or 'this deployment'} → {request.environment}"
                f"{' ' + request.details.version if request.details.version else ''}: the freeze "
                "is overridden for this request and the policy's extra approvals are added."
            )
            # trigger_id expires 3 s after the click: open the modal right after the ack.
            background.spawn(
                chat.open_modal(trigger, break_glass_reason_modal(request.id, summary)),
                name=f"break-glass-modal:{request_id}",
            )

    async def handle_break_glass_submission(ack: AsyncAck, context: AsyncBoltContext) -> None:
        payload = payload_of(context, ViewSubmission)
        reason = payload.input_value(BlockId.reason.value, REASON_ACTION_ID)
        try:
            request_id = decode_button_value(payload.view.private_metadata)
            await breakglass.break_glass(
                deps,
                request_id=request_id,
                actor=payload.user.id,
                reason=reason or "",
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
