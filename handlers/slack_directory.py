"""The Directory port over slack-sdk's AsyncWebClient: user groups, users and the installation,
cached briefly, with concurrent lookups of one key sharing a single in-flight request.

Stale if error: when Slack cannot be asked (unreachable, 5xx, 429), a lookup that is not
`fresh` is answered from a cached answer up to `STALE_IF_ERROR` old (a non-deciding vote, a
card, a reminder); a `fresh` one (a deciding vote) fails, so the decision waits for Slack. The
installation, once learnt, is kept for the life of the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.domain.channels import ChannelInfo
from bot.domain.people import Installation, SlackUser
from bot.log_throttle import FailureLog
from bot.ports import Clock
from handlers.slack_chat import ChatError, _call
from handlers.slack_health import SlackHealth

log = logging.getLogger(__name__)

T = TypeVar("T")

USERGROUP_TTL = timedelta(minutes=5)
# A click is checked against who Slack says the clicker is; a deciding vote asks Slack afresh.
USER_TTL = timedelta(seconds=60)
# "Afresh" (a deciding vote, check-config --live): an answer Slack gave within this window.
FRESH_WINDOW = timedelta(seconds=1)
ZONE_TTL = timedelta(hours=1)
# When Slack cannot be asked: how old a cached answer may be for a lookup that is not fresh.
STALE_IF_ERROR = timedelta(minutes=10)


class _Cache(Generic[T]):
    """Values per key for `ttl` (on the injected clock), stamped with the time they were asked.
    A `fresh` read takes only an answer asked within `fresh_window`: many deciding votes at
    once (each re-checks every voter of its request) share one lookup per person instead of
    asking Slack again for each."""

    def __init__(
        self,
        clock: Clock,
        ttl: timedelta,
        fresh_window: timedelta,
        stale_for: timedelta = STALE_IF_ERROR,
        on_stale: Callable[[ChatError], None] = lambda _exc: None,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._fresh_window = fresh_window
        self._stale_for = stale_for
        self._on_stale = on_stale
        self._values: dict[str, tuple[datetime, T]] = {}
        self._inflight: dict[str, tuple[datetime, asyncio.Task[T]]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[T]], *, fresh: bool) -> T:
        now = self._clock.now()
        max_age = self._fresh_window if fresh else self._ttl
        cached = self._values.get(key)
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
        inflight = self._inflight.get(key)
        if inflight is None or now - inflight[0] >= max_age:
            task = asyncio.create_task(self._fetch(key, now, fetch))
            self._inflight[key] = (now, task)
            task.add_done_callback(lambda done: self._forget(key, done))
        else:
            task = inflight[1]
        # shield: one caller being cancelled must not cancel the lookup the others wait on.
        try:
            return await asyncio.shield(task)
        except ChatError as exc:
            stale = self._values.get(key)
            if fresh or not exc.retryable or stale is None:
                raise
            if self._clock.now() - stale[0] >= self._stale_for:
                raise
            self._on_stale(exc)
            return stale[1]

    def known(self, key: str) -> T | None:
        """The last answer Slack gave for `key`, however old; None if it was never asked."""
        cached = self._values.get(key)
        return None if cached is None else cached[1]

    async def _fetch(self, key: str, asked_at: datetime, fetch: Callable[[], Awaitable[T]]) -> T:
        # Stamped with the time the request was made: the answer is at least that fresh.
        value = await fetch()
        stored = self._values.get(key)
        if stored is None or stored[0] <= asked_at:  # never replace a newer answer
            self._values[key] = (asked_at, value)
        return value

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        inflight = self._inflight.get(key)
        if inflight is not None and inflight[1] is task:
            del self._inflight[key]
        # Mark the exception retrieved even if every waiter was cancelled (no "never retrieved").
        if not task.cancelled():
            task.exception()

    def drop(self, key: str | None = None) -> None:
        if key is None:
            self._values.clear()
        else:
            self._values.pop(key, None)


class SlackDirectory:
    """Implements bot.ports.Directory and bot.ports.Workspace."""

    def __init__(
        self,
        client: AsyncWebClient,
        clock: Clock,
        ttl: timedelta = USERGROUP_TTL,
        user_ttl: timedelta = USER_TTL,
        fresh_window: timedelta = FRESH_WINDOW,
        *,
        stale_for: timedelta = STALE_IF_ERROR,
        health: SlackHealth | None = None,
        failures: FailureLog | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._health = health
        self._failures = failures or FailureLog()
        self._groups: _Cache[frozenset[str]] = _Cache(
            clock, ttl, fresh_window, stale_for, lambda exc: self._stale("user groups", exc)
        )
        self._users: _Cache[SlackUser | None] = _Cache(
            clock, user_ttl, fresh_window, stale_for, lambda exc: self._stale("users", exc)
        )
        # Time zones change rarely; any cached one beats the default while Slack is down.
        self._zones: _Cache[str | None] = _Cache(
            clock, ZONE_TTL, fresh_window, timedelta.max, lambda exc: self._stale("zones", exc)
        )
        self._installation: Installation | None = None
        self._installing: asyncio.Task[Installation] | None = None

    async def _call(self, method: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        return await _call(method, call, self._health)

    def _stale(self, what: str, exc: ChatError) -> None:
        self._failures.failed(
            log, f"Slack lookups of {what} (answered from the cache)", exc, self._clock.now()
        )

    async def usergroup_members(self, usergroup: str, *, fresh: bool = False) -> frozenset[str]:
        return await self._groups.get(
            usergroup, lambda: self._fetch_usergroup(usergroup), fresh=fresh
        )

    async def _fetch_usergroup(self, usergroup: str) -> frozenset[str]:
        response = await self._call(
            "usergroups.users.list", self._client.usergroups_users_list(usergroup=usergroup)
        )
        return frozenset(str(user) for user in response.get("users") or ())

    def known_usergroup_members(self, usergroup: str) -> frozenset[str] | None:
        """The group's members as Slack last listed them, without asking; None if never asked."""
        return self._groups.known(usergroup)

    def invalidate(self, usergroup: str | None = None) -> None:
        """Drop cached members of one group (or of all groups), e.g. on
        `subteam_members_changed`."""
        self._groups.drop(usergroup)

    async def user(self, user_id: str, *, fresh: bool = False) -> SlackUser | None:
        return await self._users.get(user_id, lambda: self._fetch_user(user_id), fresh=fresh)

    async def _fetch_user(self, user_id: str) -> SlackUser | None:
        try:
            response = await self._call("users.info", self._client.users_info(user=user_id))
        except ChatError as exc:
            if exc.error_code in {"user_not_found", "user_not_visible"}:
                return None
            raise
        return slack_user(response.get("user"))

    def known_installation(self) -> Installation | None:
        """The installation if it was learnt, without asking Slack."""
        return self._installation

    async def installation(self) -> Installation:
        """Learnt once (auth.test, bots.info), then kept. Concurrent callers share one attempt;
        a failed attempt is not kept, so the next caller asks again."""
        if self._installation is not None:
            return self._installation
        task = self._installing
        if task is None or task.done():
            task = self._installing = asyncio.create_task(self._learn_installation())
            task.add_done_callback(lambda done: None if done.cancelled() else done.exception())
        return await asyncio.shield(task)

    async def _learn_installation(self) -> Installation:
        installation = await self._fetch_installation()
        self._installation = installation
        return installation

    async def _fetch_installation(self) -> Installation:
        auth = await self._call("auth.test", self._client.auth_test())
        team_id = _text(auth.get("team_id"))
        if team_id is None:
            raise ChatError("auth.test", "no_team_id")
        bot_id = _text(auth.get("bot_id"))
        app_id: str | None = None
        if bot_id is not None:
            bot = await self._call("bots.info", self._client.bots_info(bot=bot_id))
            app_id = _text((bot.get("bot") or {}).get("app_id"))
        return Installation(
            team_id=team_id,
            enterprise_id=_text(auth.get("enterprise_id")),
            app_id=app_id,
            bot_user_id=_text(auth.get("user_id")),
        )

    async def user_by_email(self, email: str) -> str | None:
        try:
            response = await self._call(
                "users.lookupByEmail", self._client.users_lookupByEmail(email=email)
            )
        except ChatError as exc:
            if exc.error_code == "users_not_found":
                return None
            raise
        user = response.get("user") or {}
        user_id = user.get("id")
        return str(user_id) if user_id else None

    async def user_timezone(self, user: str) -> str | None:
        """The person's time zone; cached, and None (the caller's default zone) while Slack
        cannot be asked and nothing is cached."""
        try:
            return await self._zones.get(user, lambda: self._fetch_timezone(user), fresh=False)
        except ChatError as exc:
            if not exc.retryable:
                raise
            self._failures.failed(
                log, "Slack lookups of time zones (the default zone used)", exc, self._clock.now()
            )
            return None

    async def _fetch_timezone(self, user: str) -> str | None:
        try:
            response = await self._call("users.info", self._client.users_info(user=user))
        except ChatError as exc:
            if exc.error_code == "user_not_found":
                return None
            raise
        tz = (response.get("user") or {}).get("tz")
        return str(tz) if tz else None

    # Workspace (`check-config --live`): asked afresh, nothing cached ---------------------------

    async def usergroup(self, usergroup: str) -> frozenset[str] | None:
        try:
            return await self.usergroup_members(usergroup, fresh=True)
        except ChatError as exc:
            if exc.error_code == "no_such_subteam":
                return None
            raise

    async def channel(self, channel: str) -> ChannelInfo | None:
        try:
            response = await self._call(
                "conversations.info", self._client.conversations_info(channel=channel)
            )
        except ChatError as exc:
            if exc.error_code == "channel_not_found":
                return None
            raise
        return channel_info(response.get("channel"))

    async def scopes(self) -> frozenset[str] | None:
        # Slack lists the token's scopes in a header of every Web API response.
        response = await self._call("auth.test", self._client.auth_test())
        for name, value in (response.headers or {}).items():
            if name.lower() == "x-oauth-scopes":
                raw = value[0] if isinstance(value, list) and value else value
                if isinstance(raw, str):
                    return frozenset(s.strip() for s in raw.split(",") if s.strip())
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def channel_info(data: Any) -> ChannelInfo | None:
    """A `conversations.info` channel object as a ChannelInfo; None for anything without an id.
    Read so that an odd value never makes a channel look usable: a missing or non-boolean
    `is_member` is "not a member", and `is_archived` is set unless it is exactly false."""
    if not isinstance(data, dict) or not _text(data.get("id")):
        return None
    channel_id = str(data["id"])
    private = data.get("is_private")
    return ChannelInfo(
        id=channel_id,
        name=_text(data.get("name")),
        is_private=private is True or (private is None and data.get("is_group") is True),
        is_archived=data.get("is_archived", False) is not False,
        is_member=data.get("is_member") is True,
    )


def slack_user(data: Any) -> SlackUser | None:
    """A `users.info` user object as a SlackUser; None for anything without an id. A flag that
    is not a JSON boolean counts as set where that is the safe reading (deleted, bot, guest)."""
    if not isinstance(data, dict) or not _text(data.get("id")):
        return None
    raw_profile = data.get("profile")
    profile: dict[str, Any] = raw_profile if isinstance(raw_profile, dict) else {}

    def flag(name: str) -> bool:
        value = data.get(name, False)
        return value is not False  # fail closed: a missing flag is false, anything odd is true

    return SlackUser(
        id=str(data["id"]),
        team_id=_text(data.get("team_id")),
        enterprise_id=_text((data.get("enterprise_user") or {}).get("enterprise_id"))
        if isinstance(data.get("enterprise_user"), dict)
        else _text(data.get("enterprise_id")),
        deleted=flag("deleted"),
        is_bot=flag("is_bot"),
        is_app_user=flag("is_app_user"),
        is_restricted=flag("is_restricted"),
        is_ultra_restricted=flag("is_ultra_restricted"),
        is_stranger=flag("is_stranger"),
        name=_text(profile.get("display_name")) or _text(data.get("name")),
        email=_text(profile.get("email")),
    )
