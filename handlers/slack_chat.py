"""The Chat and Directory ports over slack-sdk's AsyncWebClient (rate-limit aware, cached lookups).

Slack failures surface as `ChatError(method, error_code)`: never the SDK's exception, whose
response object carries the request headers (and so the bot token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.domain.mrkdwn import Mrkdwn, as_mrkdwn
from bot.ports import ChatRateLimited, ChatUnavailable, PostedMessage
from handlers.slack_health import SlackHealth, kind_of

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
RATE_LIMIT_RETRIES = 5
CONNECTION_RETRIES = 2
# Slack answers these when the message or channel is gone: no permalink rather than an error.
_NO_PERMALINK = frozenset({"message_not_found", "channel_not_found", "not_in_channel"})


class ChatError(Exception):
    """A Slack Web API call failed. Carries the method and Slack's error code, never the token."""

    def __init__(
        self,
        method: str,
        error_code: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"Slack {method} failed: {error_code}")
        self.method = method
        self.error_code = error_code
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth trying again later: rate limits, Slack's 5xx and transport failures."""
        return self.error_code in (
            "ratelimited",
            "transport_error",
            "fatal_error",
            "internal_error",
        ) or (self.status is not None and (self.status == 429 or self.status >= 500))

    def __repr__(self) -> str:
        return f"ChatError(method={self.method!r}, error_code={self.error_code!r})"


class RateLimitedChatError(ChatError, ChatRateLimited):
    """Slack answered 429 (after the client's own retries, if it has any)."""


class UnavailableChatError(ChatError, ChatUnavailable):
    """Slack could not be reached, or answered 5xx (after the client's connection retries)."""


def make_web_client(
    token: str,
    base_url: str | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout: int = 30,
    rate_limit_retries: int = RATE_LIMIT_RETRIES,
    connection_retries: int = CONNECTION_RETRIES,
) -> AsyncWebClient:
    """An AsyncWebClient that waits out 429s (`Retry-After`) and retries dropped connections.

    Pass a long-lived `session` (created inside the running loop, closed at shutdown) to reuse
    connections; without one slack-sdk opens a session per call. `rate_limit_retries=0` makes
    429s surface at once as `RateLimitedChatError` (for a caller that queues instead of waiting);
    `connection_retries=0` surfaces a dropped connection at once (for a caller Slack waits on).
    """
    url = base_url or DEFAULT_SLACK_API_URL
    if not url.endswith("/"):
        url += "/"  # urljoin would otherwise drop the last path segment ("…/api" + "chat.update")
    return AsyncWebClient(
        token=token,
        base_url=url,
        session=session,
        timeout=timeout,
        retry_handlers=[
            *(
                [AsyncConnectionErrorRetryHandler(max_retry_count=connection_retries)]
                if connection_retries > 0
                else []
            ),
            *(
                [AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)]
                if rate_limit_retries > 0
                else []
            ),
        ],
    )


def _chat_error(method: str, exc: SlackApiError) -> ChatError:
    response = exc.response
    status: int | None = getattr(response, "status_code", None)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    retry_after: float | None = None
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
            try:
                retry_after = float(raw)
            except (TypeError, ValueError):
                retry_after = None
    error = str(code or f"http_{status}")
    if status == 429 or error == "ratelimited":
        return RateLimitedChatError(method, error, status=status, retry_after=retry_after)
    if status is not None and status >= 500:
        return UnavailableChatError(method, error, status=status, retry_after=retry_after)
    return ChatError(method, error, status=status, retry_after=retry_after)


async def _call(
    method: str, call: Awaitable[AsyncSlackResponse], health: SlackHealth | None = None
) -> AsyncSlackResponse:
    """Await one Web API call, translating its failures into ChatError (and telling `health`
    how Slack answered)."""
    try:
        response = await call
    except SlackApiError as exc:
        # `from None`: the SDK exception's response holds the request headers (bearer token).
        error = _chat_error(method, exc)
        if health is not None:
            health.failed(method, kind_of(error.error_code, error.status))
        raise error from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        if health is not None:
            health.failed(method, kind_of("transport_error", None))
        raise UnavailableChatError(method, "transport_error") from exc
    if health is not None:
        health.succeeded()
    return response


class SlackChat:
    """Implements bot.ports.Chat."""

    def __init__(self, client: AsyncWebClient, health: SlackHealth | None = None) -> None:
        self._client = client
        self._health = health
        self._dm_channels: dict[str, str] = {}  # DM channel ids never change for a user

    async def _call(self, method: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        return await _call(method, call, self._health)

    async def post_message(
        self,
        channel: str,
        text: Mrkdwn,
        blocks: Sequence[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> PostedMessage:
        response = await self._call(
            "chat.postMessage",
            self._client.chat_postMessage(
                channel=channel,
                text=as_mrkdwn(text),  # a plain str that slipped through is escaped whole
                blocks=list(blocks) if blocks is not None else None,
                thread_ts=thread_ts,
                # Cards carry several links: previews would bury the buttons.
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return PostedMessage(channel=str(response["channel"]), ts=str(response["ts"]))

    async def update_message(
        self, channel: str, ts: str, text: Mrkdwn, blocks: Sequence[dict[str, Any]] | None = None
    ) -> None:
        await self._call(
            "chat.update",
            self._client.chat_update(
                channel=channel,
                ts=ts,
                text=as_mrkdwn(text),
                blocks=list(blocks) if blocks is not None else None,
            ),
        )

    async def post_ephemeral(self, channel: str, user: str, text: Mrkdwn) -> None:
        await self._call(
            "chat.postEphemeral",
            self._client.chat_postEphemeral(channel=channel, user=user, text=as_mrkdwn(text)),
        )

    async def open_modal(self, trigger_id: str, view: dict[str, Any]) -> None:
        await self._call("views.open", self._client.views_open(trigger_id=trigger_id, view=view))

    async def send_dm(
        self, user: str, text: Mrkdwn, blocks: Sequence[dict[str, Any]] | None = None
    ) -> None:
        channel = self._dm_channels.get(user)
        if channel is None:
            response = await self._call(
                "conversations.open", self._client.conversations_open(users=user)
            )
            channel = str(response["channel"]["id"])
            self._dm_channels[user] = channel
        await self.post_message(channel, text, blocks)

    async def permalink(self, channel: str, ts: str) -> str | None:
        try:
            response = await self._call(
                "chat.getPermalink",
                self._client.chat_getPermalink(channel=channel, message_ts=ts),
            )
        except ChatError as exc:
            if exc.error_code in _NO_PERMALINK:
                return None
            raise
        permalink = response.get("permalink")
        return str(permalink) if permalink else None
