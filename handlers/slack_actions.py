"""Bolt listeners for the card's buttons and the rejection modal.

Thin: decode the click into a VoteCommand, make one service call, acknowledge, then (after the
acknowledgement, in the background) talk to Slack. The vote is committed before the ack.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.background import BackgroundTasks
from bot.domain.model import VoteKind
from bot.domain.people import Interaction
from bot.ports import Announcer
from bot.services.voting import VoteCommand, Voting
from handlers.action_ids import REASON_ACTION_ID, ActionId, BlockId, CallbackId, decode_button_value
from handlers.errors import correlation_id

log = logging.getLogger(__name__)


def register(
    bolt: AsyncApp, *, voting: Voting, announcer: Announcer, background: BackgroundTasks
) -> None:
    async def handle_approve_action(ack: AsyncAck, body: dict[str, Any]) -> None:
        click = _click(body)
        if click is None:
            await ack()
            return
        request_id, user, channel = click
        result = await voting.cast(
            VoteCommand(request_id, user, VoteKind.APPROVE, interaction=interaction_of(body))
        )
        await ack()
        if result.refusal is not None:
            target = channel or (result.request.channel if result.request else None)
            if target:
                background.spawn(
                    announcer.tell(target, user, result.refusal.message),
                    name=f"refusal:{request_id}:{user}",
                )

    async def handle_reject_action(ack: AsyncAck, body: dict[str, Any]) -> None:
        click = _click(body)
        if click is None:
            await ack()
            return
        request_id, user, channel = click
        result = await voting.precheck(
            VoteCommand(request_id, user, VoteKind.REJECT, interaction=interaction_of(body))
        )
        await ack()
        if result.refusal is not None:
            target = channel or (result.request.channel if result.request else None)
            if target:
                background.spawn(
                    announcer.tell(target, user, result.refusal.message),
                    name=f"refusal:{request_id}:{user}",
                )
        elif result.request is not None and (trigger := body.get("trigger_id")):
            # trigger_id expires 3 s after the click: open the modal right after the ack.
            background.spawn(
                announcer.ask_reject_reason(str(trigger), result.request),
                name=f"reject-modal:{request_id}",
            )

    async def handle_reject_submission(ack: AsyncAck, body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        user = (body.get("user") or {}).get("id")
        try:
            request_id = decode_button_value(str(view.get("private_metadata", "")))
        except ValueError:
            await ack(
                response_action="errors",
                errors={
                    BlockId.reason.value: "This form is no longer valid; "
                    "click Reject on the card again."
                },
            )
            return
        reason = _submitted_reason(view)
        # The modal is Quorum's own, opened from a click that passed the card checks; its
        # submission is checked against the installation (and the view's app) and the person.
        result = await voting.cast(
            VoteCommand(
                request_id,
                str(user),
                VoteKind.REJECT,
                reason,
                interaction=interaction_of(body, app_id=_text(view.get("app_id"))),
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

    async def handle_listener_error(error: Exception, body: dict[str, Any]) -> None:
        cid = correlation_id()
        log.error("slack listener failed [%s] (type=%s)", cid, body.get("type"), exc_info=error)

    bolt.action(ActionId.approve.value)(handle_approve_action)
    bolt.action(ActionId.reject.value)(handle_reject_action)
    bolt.view(CallbackId.reject_reason.value)(handle_reject_submission)
    bolt.error(handle_listener_error)


def _click(body: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(request id, clicking user, channel) of a button click; None for a foreign button."""
    actions = body.get("actions") or []
    user = (body.get("user") or {}).get("id")
    if not actions or not user:
        return None
    try:
        request_id = decode_button_value(str(actions[0].get("value", "")))
    except ValueError:
        log.info("ignored a click with an undecodable value")
        return None
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return request_id, str(user), channel


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def interaction_of(body: dict[str, Any], *, app_id: str | None = None) -> Interaction:
    """Where Slack's payload says the interaction came from: every field as sent, compared later
    against the installation and the card (nothing here is trusted). `app_id`: a view's own
    `app_id`, which must agree with `api_app_id`."""
    team, user = _object(body.get("team")), _object(body.get("user"))
    container, channel = _object(body.get("container")), _object(body.get("channel"))
    api_app_id = _text(body.get("api_app_id"))
    if app_id is not None and app_id != api_app_id:
        api_app_id = None  # two different apps named: matches no installation
    where = _text(channel.get("id")), _text(container.get("channel_id"))
    clicked_in = where[0] or where[1] if None in where or where[0] == where[1] else None
    return Interaction(
        team_id=_text(team.get("id")),
        enterprise_id=_text(team.get("enterprise_id")) or _text(body.get("enterprise_id")),
        api_app_id=api_app_id,
        user_team_id=_text(user.get("team_id")),
        channel=clicked_in,  # None when the payload names two channels
        message_ts=_text(container.get("message_ts")),
        is_stranger=body.get("is_stranger", False) is not False
        or user.get("is_stranger", False) is not False,
    )


def _submitted_reason(view: dict[str, Any]) -> str | None:
    values = (view.get("state") or {}).get("values") or {}
    field = (values.get(BlockId.reason.value) or {}).get(REASON_ACTION_ID) or {}
    value = field.get("value")
    return str(value) if value is not None else None
