"""Bolt listeners for the card's buttons and the rejection modal.

Thin: read the validated payload (`handlers/slack_payloads.py`, checked by the guard in
`handlers/slack_events.py` before bolt dispatches), decode the click into a VoteCommand, make
one service call, acknowledge, then (after the acknowledgement, in the background) talk to
Slack. The vote is committed before the ack.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.background import BackgroundTasks
from bot.domain.model import VoteKind
from bot.domain.mrkdwn import as_mrkdwn
from bot.domain.people import Interaction
from bot.ports import Announcer
from bot.services.voting import VoteCommand, Voting
from handlers.action_ids import REASON_ACTION_ID, ActionId, BlockId, CallbackId, decode_button_value
from handlers.errors import correlation_id
from handlers.slack_payloads import BlockActions, ViewSubmission, payload_of

log = logging.getLogger(__name__)


def register(
    bolt: AsyncApp, *, voting: Voting, announcer: Announcer, background: BackgroundTasks
) -> None:
    async def handle_approve_action(ack: AsyncAck, context: AsyncBoltContext) -> None:
        payload = payload_of(context, BlockActions)
        click = _click(payload)
        if click is None:
            await ack()
            return
        request_id, user, channel = click
        result = await voting.cast(
            VoteCommand(request_id, user, VoteKind.APPROVE, interaction=interaction_of(payload))
        )
        await ack()
        if result.refusal is not None:
            target = channel or (result.request.channel if result.request else None)
            if target:
                background.spawn(
                    announcer.tell(target, user, as_mrkdwn(result.refusal.message)),
                    name=f"refusal:{request_id}:{user}",
                )

    async def handle_reject_action(ack: AsyncAck, context: AsyncBoltContext) -> None:
        payload = payload_of(context, BlockActions)
        click = _click(payload)
        if click is None:
            await ack()
            return
        request_id, user, channel = click
        result = await voting.precheck(
            VoteCommand(request_id, user, VoteKind.REJECT, interaction=interaction_of(payload))
        )
        await ack()
        if result.refusal is not None:
            target = channel or (result.request.channel if result.request else None)
            if target:
                background.spawn(
                    announcer.tell(target, user, as_mrkdwn(result.refusal.message)),
                    name=f"refusal:{request_id}:{user}",
                )
        elif result.request is not None and (trigger := payload.trigger_id):
            # trigger_id expires 3 s after the click: open the modal right after the ack.
            background.spawn(
                announcer.ask_reject_reason(trigger, result.request),
                name=f"reject-modal:{request_id}",
            )

    async def handle_reject_submission(ack: AsyncAck, context: AsyncBoltContext) -> None:
        payload = payload_of(context, ViewSubmission)
        try:
            request_id = decode_button_value(payload.view.private_metadata)
        except ValueError:
            await ack(
                response_action="errors",
                errors={
                    BlockId.reason.value: "This form is no longer valid; "
                    "click Reject on the card again."
                },
            )
            return
        reason = payload.input_value(BlockId.reason.value, REASON_ACTION_ID)
        # The modal is Quorum's own, opened from a click that passed the card checks; its
        # submission is checked against the installation (and the view's app) and the person.
        result = await voting.cast(
            VoteCommand(
                request_id,
                payload.user.id,
                VoteKind.REJECT,
                reason,
                interaction=interaction_of(payload, app_id=payload.view.app_id),
                on_card=False,
            )
        )
        if result.refusal is not None:
            await ack(
                response_action="errors",
                errors={BlockId.reason.value: result.refusal.message[:150]},
            )
            return
        await ack()

    async def handle_listener_error(
        error: Exception, body: dict[str, Any], response: BoltResponse | None
    ) -> None:
        """Any listener's unexpected failure: one log line with a correlation id (the error's
        type and traceback, never the payload), answered 200 with an ephemeral text naming the
        id instead of bolt's bare 500 (Slack would show an error and nothing would explain it)."""
        cid = correlation_id()
        log.error(
            "slack listener failed [%s] (type=%s): %s",
            cid,
            body.get("type") or body.get("command"),
            type(error).__name__,
            exc_info=error,
        )
        if response is not None:
            response.status = 200
            response.headers = {"content-type": ["application/json;charset=utf-8"]}
            response.body = json.dumps(
                {
                    "response_type": "ephemeral",
                    "text": f"Quorum could not complete this (correlation id {cid}).",
                }
            )

    bolt.action(ActionId.approve.value)(handle_approve_action)
    bolt.action(ActionId.reject.value)(handle_reject_action)
    bolt.view(CallbackId.reject_reason.value)(handle_reject_submission)
    bolt.error(handle_listener_error)


def _click(payload: BlockActions) -> tuple[str, str, str | None] | None:
    """(request id, clicking user, channel) of a button click; None for a foreign button."""
    user = payload.user.id
    if not user:
        return None
    try:
        request_id = decode_button_value(payload.actions[0].value or "")
    except ValueError:
        log.info("ignored a click with an undecodable value")
        return None
    return request_id, user, channel_of(payload)


def channel_of(payload: BlockActions) -> str | None:
    """The channel the click came from, as the payload names it."""
    channel = payload.channel.id if payload.channel else None
    return channel or (payload.container.channel_id if payload.container else None)


def interaction_of(
    payload: BlockActions | ViewSubmission, *, app_id: str | None = None
) -> Interaction:
    """Where Slack's payload says the interaction came from: every field as sent, compared later
    against the installation and the card (nothing here is trusted). `app_id`: a view's own
    `app_id`, which must agree with `api_app_id`."""
    team, user = payload.team, payload.user
    container = payload.container if isinstance(payload, BlockActions) else None
    channel = payload.channel if isinstance(payload, BlockActions) else None
    api_app_id = payload.api_app_id or None
    if app_id is not None and app_id != api_app_id:
        api_app_id = None  # two different apps named: matches no installation
    where = (
        (channel.id if channel else None) or None,
        (container.channel_id if container else None) or None,
    )
    clicked_in = where[0] or where[1] if None in where or where[0] == where[1] else None
    return Interaction(
        team_id=team.id or None,
        enterprise_id=team.enterprise_id or payload.enterprise_id or None,
        api_app_id=api_app_id,
        user_team_id=user.team_id or None,
        channel=clicked_in,  # None when the payload names two channels
        message_ts=(container.message_ts if container else None) or None,
        is_stranger=payload.is_stranger or user.is_stranger,
    )
