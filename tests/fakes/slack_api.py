"""A fake Slack Web API on 127.0.0.1 that speaks the real wire format, records every call and can be
told to fail; end-to-end tests point slack-sdk's `base_url` at it and wait for recorded calls.

Responses are modelled on the docs examples in `tests/fixtures/slack/web_api/`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

DEFAULT_TOKEN = "xoxb-fake-token-0000"
TEAM_ID = "T0FAKE"
BOT_USER_ID = "U0QUORUM"
BOT_ID = "B0QUORUM"
APP_ID = "A0QUORUM"
# The bot scopes manifest.yml requests; sent as `X-OAuth-Scopes`, as Slack does on every response.
BOT_SCOPES = (
    "chat:write",
    "chat:write.public",
    "commands",
    "im:write",
    "users:read",
    "users:read.email",
    "usergroups:read",
    "channels:read",
    "groups:read",
)
# Form-encoded requests carry these as JSON strings; real Slack decodes them, and so do we.
_JSON_ARGS = frozenset({"blocks", "attachments", "view", "metadata"})


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded API call: the method, its arguments (query, form and JSON merged) and headers.
    `status` and `response` are what the fake answered."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after: int | None
    error: str
    remaining: int


@dataclass(slots=True)
class _Outage:
    """Every call (of `methods`, or of all when None) answers `status` until `until`
    (monotonic seconds; None: until `recover_all`)."""

    status: int
    retry_after: int | None
    methods: frozenset[str] | None
    until: float | None

    def applies(self, method: str) -> bool:
        if self.until is not None and time.monotonic() >= self.until:
            return False
        return self.methods is None or method in self.methods


@dataclass(slots=True)
class _Channel:
    id: str
    name: str
    is_member: bool = True
    is_archived: bool = False
    is_private: bool = False


@dataclass(slots=True)
class _User:
    id: str
    email: str | None
    tz: str
    name: str
    team_id: str = TEAM_ID
    deleted: bool = False
    is_bot: bool = False
    is_restricted: bool = False
    is_ultra_restricted: bool = False
    is_stranger: bool | None = None  # only in some payloads: absent unless set
    enterprise_id: str | None = None


class WaitTimeout(AssertionError):
    """A test waited for a call that never came."""


class FakeSlack:
    """`async with FakeSlack() as slack:` then `make_web_client(slack.token, slack.base_url)`."""

    def __init__(
        self, token: str = DEFAULT_TOKEN, *, auto_users: bool = True, team_id: str = TEAM_ID
    ) -> None:
        self.token = token
        # A workspace where every well-formed user id not added otherwise is a full member
        # (the tests' usual cast); `auto_users=False`: unknown ids are `user_not_found`.
        self.auto_users = auto_users
        self.team_id = team_id
        self.enterprise_id: str | None = None
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.views: list[dict[str, Any]] = []
        self._usergroups: dict[str, list[str]] = {}
        self._users: dict[str, _User] = {}
        self._dm_channels: dict[str, str] = {}
        self._channels: dict[str, _Channel] = {}
        # The token's scopes (`X-OAuth-Scopes`); None: the header is not sent.
        self.scopes: tuple[str, ...] | None = BOT_SCOPES
        self._unknown: set[str] = set()
        self._failures: dict[str, list[_Failure]] = {}
        self._outage: _Outage | None = None
        self._down = False  # go_down: connections refused, open ones reset
        self.refused = 0  # requests cut off while down (on connections opened before)
        self._site: web.SockSite | None = None
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._condition = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "conversations.open": self._conversations_open,
            "usergroups.users.list": self._usergroups_users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
            "users.info": self._users_info,
            "bots.info": self._bots_info,
            "auth.test": self._auth_test,
            "conversations.info": self._conversations_info,
        }

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Listen on `port` (0: a free one)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("POST", "/api/{method}", self._handle)
        app.router.add_route("GET", "/api/{method}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        await self._listen(port)

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self._port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def go_down(self) -> None:
        """Slack unreachable: new connections are refused (the port is closed) and requests on
        connections opened before are cut off without an answer."""
        self._down = True
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def come_back(self) -> None:
        """Listen again on the same port (base_url is unchanged)."""
        assert self._port is not None
        if self._site is None:
            await self._listen(self._port)
        self._down = False

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}/api/"

    # --- state set-up ---------------------------------------------------------------------------

    def set_usergroup(self, usergroup_id: str, users: list[str] | tuple[str, ...]) -> None:
        self._usergroups[usergroup_id] = list(users)

    def add_user(
        self,
        user_id: str,
        email: str | None = None,
        tz: str = "Etc/UTC",
        name: str | None = None,
        **flags: Any,
    ) -> None:
        """A user of the workspace; `flags` set `team_id`, `deleted`, `is_bot`, `is_restricted`,
        `is_ultra_restricted`, `is_stranger`, `enterprise_id` as users.info reports them."""
        self._users[user_id] = _User(user_id, email, tz, name or user_id.lower(), **flags)
        self._unknown.discard(user_id)

    def add_channel(
        self,
        channel_id: str,
        is_member: bool = True,
        is_archived: bool = False,
        *,
        name: str | None = None,
        is_private: bool = False,
    ) -> None:
        """A channel `conversations.info` knows (`is_member`: the bot is in it); channels not
        added are `channel_not_found`, as Slack answers for a private channel the bot is not in."""
        self._channels[channel_id] = _Channel(
            channel_id, name or channel_id.lower(), is_member, is_archived, is_private
        )

    def remove_user(self, user_id: str) -> None:
        """Slack no longer knows the user (`user_not_found`), even with `auto_users`."""
        self._users.pop(user_id, None)
        self._unknown.add(user_id)

    def fail_next(
        self,
        method: str,
        status: int | None = None,
        retry_after: int = 1,
        error: str | None = None,
        count: int = 1,
    ) -> None:
        """Make the next `count` calls of `method` fail.

        Without `error`: HTTP 429 with `Retry-After: retry_after` and
        `{"ok": false, "error": "ratelimited"}` (another `status`, e.g. 503: `internal_error`).
        With `error`: `{"ok": false, "error": error}` with HTTP 200, as Slack answers API errors
        (or `status` when given).
        """
        if error is None:
            code = status or 429
            failure = _Failure(
                code,
                retry_after if code == 429 else None,
                "ratelimited" if code == 429 else "internal_error",
                count,
            )
        else:
            failure = _Failure(status or 200, retry_after if status == 429 else None, error, count)
        self._failures.setdefault(method, []).append(failure)

    def recover(self, method: str) -> None:
        """Drop the failures still queued for `method`."""
        self._failures.pop(method, None)

    def fail_all(
        self,
        status: int = 500,
        *,
        retry_after: int = 1,
        seconds: float | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Every call (of `methods`, or of every method) answers HTTP `status` — 429 with
        `Retry-After: retry_after` and `ratelimited`, another status with `internal_error` — for
        `seconds` (None: until `recover_all`)."""
        self._outage = _Outage(
            status,
            retry_after if status == 429 else None,
            frozenset(methods) if methods is not None else None,
            time.monotonic() + seconds if seconds is not None else None,
        )

    def recover_all(self) -> None:
        """End `fail_all` and drop every queued failure."""
        self._outage = None
        self._failures.clear()

    def dm_channel(self, user: str) -> str:
        """The DM channel id conversations.open returns for `user`."""
        return self._dm_channels.setdefault(user, f"D{user}")

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    # --- waiting --------------------------------------------------------------------------------

    def calls_to(self, method: str, predicate: Callable[[Call], bool] | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (predicate is None or predicate(c))]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        count: int = 1,
        # The spec'd test helper signature; it is implemented with asyncio.timeout below.
        timeout: float = 5.0,
    ) -> list[Call]:
        """Wait until at least `count` calls of `method` matching `predicate` were recorded; return
        all matching calls. Raises WaitTimeout (an AssertionError) after `timeout` seconds."""
        async with self._condition:
            try:
                async with asyncio.timeout(timeout):
                    await self._condition.wait_for(
                        lambda: len(self.calls_to(method, predicate)) >= count
                    )
            except TimeoutError:
                seen = [c.method for c in self.calls]
                raise WaitTimeout(
                    f"waited {timeout}s for {count} call(s) of {method}; recorded: {seen}"
                ) from None
            return self.calls_to(method, predicate)

    # --- the HTTP side --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if self._down:  # a connection opened before go_down: cut it off, answer nothing
            self.refused += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)  # never reaches the client
        method = request.match_info["method"]
        args = await _read_args(request)
        headers = dict(request.headers)
        status, body, extra_headers = self._respond(method, args, headers)
        if self.scopes is not None and body.get("error") not in {"not_authed", "invalid_auth"}:
            extra_headers = {**extra_headers, "X-OAuth-Scopes": ",".join(self.scopes)}
        async with self._condition:
            self.calls.append(Call(method, args, headers, status, body))
            self._condition.notify_all()
        return web.json_response(body, status=status, headers=extra_headers)

    def _respond(
        self, method: str, args: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != self.token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        outage = self._outage
        if outage is not None and outage.applies(method):
            error = "ratelimited" if outage.status == 429 else "internal_error"
            extra = {"Retry-After": str(outage.retry_after)} if outage.retry_after else {}
            return outage.status, {"ok": False, "error": error}, extra
        failures = self._failures.get(method)
        if failures:
            failure = failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                failures.pop(0)
            extra = (
                {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            )
            return failure.status, {"ok": False, "error": failure.error}, extra
        handler = self._methods.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        try:
            return 200, handler(args), {}
        except _ApiError as exc:
            return 200, {"ok": False, "error": exc.code}, {}

    # --- methods --------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        micros = next(self._ts) * 100
        return f"{1_700_000_000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        if not args.get("text") and not args.get("blocks"):
            raise _ApiError("no_text")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": BOT_ID,
            "text": args.get("text", ""),
            "ts": ts,
        }
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        ts = _required(args, "ts", "message_not_found")
        message = self.messages.get((channel, ts))
        if message is None:
            raise _ApiError("message_not_found")
        message["text"] = args.get("text", message.get("text", ""))
        if "blocks" in args:
            message["blocks"] = args["blocks"]
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": {"text": message["text"], "user": BOT_USER_ID},
        }

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        _required(args, "channel", "channel_not_found")
        _required(args, "user", "user_not_in_channel")
        if not args.get("text") and not args.get("blocks"):
            raise _ApiError("no_text")
        return {"ok": True, "message_ts": self._next_ts()}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        ts = _required(args, "message_ts", "message_not_found")
        if (channel, ts) not in self.messages:
            raise _ApiError("message_not_found")
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        _required(args, "trigger_id", "invalid_trigger_id")
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise _ApiError("invalid_arguments")
        view_id = f"V{next(self._ids):08d}"
        stored = {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": "modal",
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{1_700_000_000 + next(self._ids)}.fakehash",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": view_id,
            "app_id": "A0QUORUM",
            "bot_id": BOT_ID,
        }
        self.views.append(stored)
        return {"ok": True, "view": stored}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(args.get("users", "")).split(",") if u]
        if not users:
            raise _ApiError("users_list_not_supplied")
        channel = self.dm_channel(users[0]) if len(users) == 1 else "G" + "".join(users)
        return {"ok": True, "channel": {"id": channel}}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """The conversations.info channel object (the shape of Slack's docs example)."""
        channel = self._channels.get(_required(args, "channel", "channel_not_found"))
        if channel is None:
            raise _ApiError("channel_not_found")
        return {
            "ok": True,
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_channel": not channel.is_private,
                "is_group": channel.is_private,
                "is_im": False,
                "is_mpim": False,
                "is_private": channel.is_private,
                "created": 1_700_000_000,
                "creator": "U0CREATOR",
                "is_archived": channel.is_archived,
                "is_general": False,
                "unlinked": 0,
                "name_normalized": channel.name,
                "is_shared": False,
                "is_ext_shared": False,
                "is_org_shared": False,
                "pending_shared": [],
                "is_pending_ext_shared": False,
                "is_member": channel.is_member,
                "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0},
                "previous_names": [],
            },
        }

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        usergroup = _required(args, "usergroup", "no_such_subteam")
        if usergroup not in self._usergroups:
            raise _ApiError("no_such_subteam")
        return {"ok": True, "users": list(self._usergroups[usergroup])}

    def _user_object(self, user: _User) -> dict[str, Any]:
        """The users.info user object (tests/fixtures/slack/web_api/users.info.json's shape)."""
        obj: dict[str, Any] = {
            "id": user.id,
            "team_id": user.team_id,
            "name": user.name,
            "deleted": user.deleted,
            "real_name": user.name,
            "tz": user.tz,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": user.is_restricted,
            "is_ultra_restricted": user.is_ultra_restricted,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "updated": 1502138686,
            "profile": {
                "email": user.email,
                "real_name": user.name,
                "display_name": user.name,
                "team": user.team_id,
            },
        }
        if user.is_stranger is not None:
            obj["is_stranger"] = user.is_stranger
        if user.enterprise_id is not None:
            obj["enterprise_user"] = {
                "id": user.id,
                "enterprise_id": user.enterprise_id,
                "enterprise_name": "Fake Org",
                "is_admin": False,
                "is_owner": False,
                "teams": [user.team_id],
            }
        return obj

    def _lookup(self, user_id: str) -> _User | None:
        user = self._users.get(user_id)
        if (
            user is None
            and self.auto_users
            and user_id not in self._unknown
            and user_id[:1] in {"U", "W"}
            and user_id[1:].isalnum()
            and user_id.isupper()
        ):
            user = _User(user_id, None, "Etc/UTC", user_id.lower(), team_id=self.team_id)
        return user

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = _required(args, "email", "users_not_found").lower()
        for user in self._users.values():
            if user.email and user.email.lower() == email:
                return {"ok": True, "user": self._user_object(user)}
        raise _ApiError("users_not_found")

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._lookup(_required(args, "user", "user_not_found"))
        if user is None:
            raise _ApiError("user_not_found")
        return {"ok": True, "user": self._user_object(user)}

    def _bots_info(self, args: dict[str, Any]) -> dict[str, Any]:
        bot = _required(args, "bot", "bot_not_found")
        if bot != BOT_ID:
            raise _ApiError("bot_not_found")
        return {
            "ok": True,
            "bot": {
                "id": BOT_ID,
                "deleted": False,
                "name": "quorum",
                "updated": 1_700_000_000,
                "app_id": APP_ID,
                "user_id": BOT_USER_ID,
                "icons": {},
            },
        }

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "quorum",
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }
        if self.enterprise_id is not None:
            response["enterprise_id"] = self.enterprise_id
        return response


class _ApiError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _required(args: Mapping[str, Any], name: str, error: str) -> str:
    value = args.get(name)
    if not value or not isinstance(value, str):
        raise _ApiError(error)
    return value


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Query string, form body and JSON body merged, as Slack accepts all three."""
    args: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return args
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return args
        if isinstance(body, dict):
            args.update(body)
        return args
    form = await request.post()
    for key, value in form.items():
        if not isinstance(value, str):
            continue  # file uploads: not supported by this fake
        if key in _JSON_ARGS:
            try:
                args[key] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        args[key] = value
    return args
