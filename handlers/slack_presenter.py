"""The Announcer port over the Chat port: renders domain objects with blocks.py and says them.

Every text it sends is a `Mrkdwn` (bot/domain/mrkdwn.py): rendered by blocks.py, or built by the
caller with the mentions Quorum means and every other part escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.model import ApprovalRequest, Vote
from bot.domain.mrkdwn import Mrkdwn, as_mrkdwn
from bot.domain.quorum import Tally
from bot.ports import CardRef, CardStatus, Chat, Clock, PostedMessage
from handlers import blocks


class SlackAnnouncer:
    def __init__(self, chat: Chat, clock: Clock) -> None:
        self._chat = chat
        self._clock = clock

    async def show_card(
        self, request: ApprovalRequest, tally: Tally, votes: Sequence[Vote], status: CardStatus
    ) -> PostedMessage:
        card = blocks.render_card(
            request,
            tally,
            votes,
            callback_status=status.callback,
            warnings=status.warnings,
            frozen_note=status.frozen_note,
            next_timer=status.next_timer,
            offer_break_glass=status.offer_break_glass,
            now=self._clock.now(),
        )
        if request.message_ts is None:
            return await self._chat.post_message(request.channel, card.text, card.blocks)
        await self._chat.update_message(request.channel, request.message_ts, card.text, card.blocks)
        return PostedMessage(channel=request.channel, ts=request.message_ts)

    async def post_votes(self, card: CardRef, votes: Sequence[Vote]) -> None:
        if card.message_ts is None:
            raise ValueError(f"the card of {card.request_id} is not posted yet")
        await self._chat.post_message(
            card.channel, blocks.render_vote_replies(votes), thread_ts=card.message_ts
        )

    async def post_decision(self, request: ApprovalRequest, tally: Tally) -> None:
        if request.message_ts is None:
            raise ValueError(f"the card of {request.id} is not posted yet")
        await self._chat.post_message(
            request.channel,
            blocks.render_decision_reply(request, tally),
            thread_ts=request.message_ts,
        )

    async def tell(self, channel: str, user: str, text: Mrkdwn) -> None:
        await self._chat.post_ephemeral(channel, user, as_mrkdwn(text))

    async def ask_reject_reason(self, trigger_id: str, request: ApprovalRequest) -> None:
        summary = f"Reject {request.service or 'this deployment'} → {request.environment}"
        if request.details.version:
            summary += f" {request.details.version}"
        await self._chat.open_modal(trigger_id, blocks.reject_reason_modal(request.id, summary))
