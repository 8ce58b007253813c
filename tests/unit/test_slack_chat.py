"""SlackChat and SlackDirectory against the fake Slack Web API over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.ports import PostedMessage
from handlers.slack_chat import ChatError, SlackChat, make_web_client
from handlers.slack_directory import FRESH_WINDOW, SlackDirectory
from tests.fakes.slack_api import FakeSlack

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return make_web_client(slack.token, slack.base_url)


@pytest.fixture
def chat(client: AsyncWebClient) -> SlackChat:
    return SlackChat(client)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def directory(client: AsyncWebClient, clock: FixedClock) -> SlackDirectory:
    return SlackDirectory(client, clock)


BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}]


async def test_post_message_returns_channel_and_ts(slack: FakeSlack, chat: SlackChat) -> None:
    first = await chat.post_message("C0PAY", "hello", BLOCKS)
    second = await chat.post_message("C0PAY", "reply", thread_ts=first.ts)

    assert first == PostedMessage("C0PAY", "1700000000.000100")
    assert second.ts == "1700000000.000200"
    call = slack.calls_to("chat.postMessage")[0]
    assert call.args["blocks"] == BLOCKS
    assert call.args["text"] == "hello"
    assert call.args["unfurl_links"] is False
    assert call.headers["Authorization"] == f"Bearer {slack.token}"
    assert slack.calls_to("chat.postMessage")[1].args["thread_ts"] == first.ts


async def test_update_message_changes_the_stored_message(slack: FakeSlack, chat: SlackChat) -> None:
    posted = await chat.post_message("C0PAY", "v1", BLOCKS)
    await chat.update_message(posted.channel, posted.ts, "v2", [])

    assert slack.message("C0PAY", posted.ts)["text"] == "v2"
    assert slack.message("C0PAY", posted.ts)["blocks"] == []
    with pytest.raises(ChatError) as caught:
        await chat.update_message("C0PAY", "1.000000", "v3")
    assert (caught.value.method, caught.value.error_code) == ("chat.update", "message_not_found")


async def test_post_ephemeral(slack: FakeSlack, chat: SlackChat) -> None:
    await chat.post_ephemeral("C0PAY", "U1", "You are the requester of this deployment.")

    (call,) = slack.calls_to("chat.postEphemeral")
    assert (call.args["channel"], call.args["user"]) == ("C0PAY", "U1")
    assert call.args["text"] == "You are the requester of this deployment."


async def test_open_modal(slack: FakeSlack, chat: SlackChat) -> None:
    view = {"type": "modal", "callback_id": "cb", "title": {"type": "plain_text", "text": "T"}}
    await chat.open_modal("trigger-1", view)

    (call,) = slack.calls_to("views.open")
    assert call.args["trigger_id"] == "trigger-1"
    assert call.args["view"] == view
    assert call.response["view"]["callback_id"] == "cb"


async def test_send_dm_opens_the_conversation_once(slack: FakeSlack, chat: SlackChat) -> None:
    await chat.send_dm("U1", "reminder 1")
    await chat.send_dm("U1", "reminder 2", BLOCKS)

    assert [c.args["users"] for c in slack.calls_to("conversations.open")] == ["U1"]
    posts = slack.calls_to("chat.postMessage")
    assert [c.args["channel"] for c in posts] == [slack.dm_channel("U1")] * 2
    assert posts[1].args["blocks"] == BLOCKS


async def test_permalink(slack: FakeSlack, chat: SlackChat) -> None:
    posted = await chat.post_message("C0PAY", "card")

    link = await chat.permalink(posted.channel, posted.ts)

    assert link == "https://fake.slack.com/archives/C0PAY/p1700000000000100"
    assert await chat.permalink("C0PAY", "9.000000") is None


async def test_rate_limit_is_waited_out_and_retried(slack: FakeSlack, chat: SlackChat) -> None:
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()

    posted = await chat.post_message("C0PAY", "card")

    calls = slack.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert posted.ts == calls[1].response["ts"]
    # slack-sdk sleeps Retry-After (plus up to 1 s of jitter) before the second attempt.
    assert time.monotonic() - started >= 1.0


async def test_api_errors_become_chat_errors(slack: FakeSlack, chat: SlackChat) -> None:
    slack.fail_next("chat.postMessage", error="channel_not_found")

    with pytest.raises(ChatError) as caught:
        await chat.post_message("C0GONE", "card")

    assert caught.value.error_code == "channel_not_found"
    assert caught.value.retryable is False
    assert str(caught.value) == "Slack chat.postMessage failed: channel_not_found"


async def test_chat_error_never_carries_the_token(slack: FakeSlack) -> None:
    secret = "xoxb-1111-2222-not-the-right-one"
    chat = SlackChat(make_web_client(secret, slack.base_url))

    with pytest.raises(ChatError) as caught:
        await chat.post_message("C0PAY", "card")

    error = caught.value
    assert error.error_code == "invalid_auth"
    rendered = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), rendered):
        assert secret not in text
    assert error.__cause__ is None
    assert error.__suppress_context__


async def test_usergroup_members_cached_within_ttl(
    slack: FakeSlack, directory: SlackDirectory, clock: FixedClock
) -> None:
    slack.set_usergroup("S0SRE", ["U1", "U2"])

    assert await directory.usergroup_members("S0SRE") == frozenset({"U1", "U2"})
    slack.set_usergroup("S0SRE", ["U1"])
    clock.advance(timedelta(minutes=4, seconds=59))
    assert await directory.usergroup_members("S0SRE") == frozenset({"U1", "U2"})
    assert len(slack.calls_to("usergroups.users.list")) == 1

    clock.advance(timedelta(seconds=1))
    assert await directory.usergroup_members("S0SRE") == frozenset({"U1"})
    calls = slack.calls_to("usergroups.users.list")
    assert [c.args["usergroup"] for c in calls] == ["S0SRE", "S0SRE"]


async def test_concurrent_lookups_share_one_request(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    slack.set_usergroup("S0SRE", ["U1"])
    slack.set_usergroup("S0PAY", ["U2"])

    results = await asyncio.gather(
        *(directory.usergroup_members("S0SRE") for _ in range(5)),
        directory.usergroup_members("S0PAY"),
    )

    assert results == [frozenset({"U1"})] * 5 + [frozenset({"U2"})]
    assert sorted(c.args["usergroup"] for c in slack.calls) == ["S0PAY", "S0SRE"]


async def test_failed_usergroup_lookup_is_not_cached(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    with pytest.raises(ChatError, match="no_such_subteam"):
        await directory.usergroup_members("S0NONE")
    slack.set_usergroup("S0NONE", ["U3"])

    assert await directory.usergroup_members("S0NONE") == frozenset({"U3"})


async def test_user_by_email(slack: FakeSlack, directory: SlackDirectory) -> None:
    slack.add_user("W012A3CDE", email="spengler@ghostbusters.example.com")

    assert await directory.user_by_email("spengler@ghostbusters.example.com") == "W012A3CDE"
    assert await directory.user_by_email("nobody@example.com") is None


async def test_user_timezone(slack: FakeSlack, directory: SlackDirectory) -> None:
    slack.add_user("W012A3CDE", tz="America/Los_Angeles")

    slack.remove_user("U0MISSING")

    assert await directory.user_timezone("W012A3CDE") == "America/Los_Angeles"
    assert await directory.user_timezone("U0MISSING") is None


async def test_user_reads_the_flags_that_decide_trust(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    slack.add_user("U0GUEST", is_restricted=True)
    slack.add_user("U0GONE", deleted=True)
    slack.add_user("U0EXT", team_id="T0OTHER", is_stranger=True)
    slack.add_user("U0GRID", team_id="T0SISTER", enterprise_id="E0ORG")
    slack.remove_user("U0NOBODY")

    guest, gone, ext, grid = [
        await directory.user(uid) for uid in ("U0GUEST", "U0GONE", "U0EXT", "U0GRID")
    ]
    assert guest is not None
    assert guest.is_restricted
    assert not guest.deleted
    assert gone is not None
    assert gone.deleted
    assert ext is not None
    assert ext.is_stranger
    assert ext.team_id == "T0OTHER"
    assert grid is not None
    assert grid.enterprise_id == "E0ORG"
    assert await directory.user("U0NOBODY") is None


async def test_user_is_cached_briefly_and_fresh_takes_only_an_answer_within_the_window(
    slack: FakeSlack, directory: SlackDirectory, clock: FixedClock
) -> None:
    await directory.user("U0WEB1")
    await directory.user("U0WEB1")
    assert len(slack.calls_to("users.info")) == 1
    await directory.user("U0WEB1", fresh=True)  # asked less than the window ago: shared
    assert len(slack.calls_to("users.info")) == 1
    clock.advance(FRESH_WINDOW)
    await directory.user("U0WEB1")  # still within the cache's minute
    assert len(slack.calls_to("users.info")) == 1
    await directory.user("U0WEB1", fresh=True)  # older than the window: asked again
    assert len(slack.calls_to("users.info")) == 2
    clock.advance(timedelta(seconds=61))
    await directory.user("U0WEB1")
    assert len(slack.calls_to("users.info")) == 3


async def test_concurrent_fresh_reads_share_one_lookup_and_a_change_shows_after_the_window(
    slack: FakeSlack, directory: SlackDirectory, clock: FixedClock
) -> None:
    clock.advance(timedelta(minutes=5))
    answers = await asyncio.gather(*(directory.user("U0WEB1", fresh=True) for _ in range(20)))
    assert len(slack.calls_to("users.info")) == 1
    assert all(a is not None and not a.deleted for a in answers)

    slack.add_user("U0WEB1", deleted=True)
    clock.advance(FRESH_WINDOW)
    answer = await directory.user("U0WEB1", fresh=True)

    assert answer is not None
    assert answer.deleted
    assert len(slack.calls_to("users.info")) == 2


async def test_installation_is_learnt_from_auth_test_and_bots_info(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    first = await directory.installation()
    again = await directory.installation()

    assert first == again
    assert (first.team_id, first.app_id, first.bot_user_id) == ("T0FAKE", "A0QUORUM", "U0QUORUM")
    assert len(slack.calls_to("auth.test")) == 1
    assert len(slack.calls_to("bots.info")) == 1


async def test_fake_accepts_form_bodies_and_rejects_bad_tokens(slack: FakeSlack) -> None:
    url = slack.base_url + "chat.postMessage"
    form = {"channel": "C1", "text": "hi", "blocks": json.dumps(BLOCKS)}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, data=form, headers={"Authorization": f"Bearer {slack.token}"}
        ) as response:
            ok = await response.json()
        async with session.post(url, data={**form, "token": "xoxb-wrong"}) as response:
            bad = await response.json()

    assert ok["ok"] is True
    assert ok["channel"] == "C1"
    assert slack.calls[0].args["blocks"] == BLOCKS
    assert bad == {"ok": False, "error": "invalid_auth"}


async def test_wait_for_wakes_on_the_recorded_call(slack: FakeSlack, chat: SlackChat) -> None:
    waiter = asyncio.create_task(
        slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)
    )
    posted = await chat.post_message("C1", "card")
    await chat.post_message("C1", "vote", thread_ts=posted.ts)

    (call,) = await waiter
    assert call.args["text"] == "vote"
    with pytest.raises(AssertionError, match=r"views\.open"):
        await slack.wait_for("views.open", timeout=0.05)


def test_make_web_client_normalises_base_url() -> None:
    client = make_web_client("xoxb-t", "http://127.0.0.1:1/api")
    assert client.base_url == "http://127.0.0.1:1/api/"
    assert make_web_client("xoxb-t", None).base_url == "https://slack.com/api/"
