"""The pieces of `check-config --live`: the policy's Slack ids, the channel check, the Workspace
port over the fake Slack, and the service over hand-written ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from bot.clock import FixedClock
from bot.domain.channels import ChannelInfo, channel_refusal
from bot.domain.people import Installation, SlackUser
from bot.policy import Policy, load_policy
from bot.policy.slack_ids import SlackIdKind, SlackIdRef, slack_ids
from bot.services.live_check import check_live
from handlers.slack_chat import ChatError, make_web_client
from handlers.slack_directory import SlackDirectory, channel_info
from tests.fakes.slack_api import BOT_SCOPES, FakeSlack
from tests.paths import EXAMPLE_POLICY, REPO

USER, GROUP, CHANNEL = SlackIdKind.USER, SlackIdKind.USERGROUP, SlackIdKind.CHANNEL


def _policy(**extra: Any) -> Policy:
    return Policy.from_mapping(
        {
            "version": 1,
            "defaults": {"channel": "C0DEPLOYS"},
            "teams": {"a": {"members": ["U0A1", "U0A2"], "usergroup": "S0A", "channel": "C0A"}},
            "environments": {"prod": {"rules": [{"name": "r", "from": "a", "approvals": 1}]}},
            **extra,
        }
    )


# --- the policy's Slack ids ----------------------------------------------------------------------


def test_slack_ids_lists_every_id_with_its_key_path() -> None:
    policy = _policy(
        identities={
            "github": {"octo": "U0GH"},
            "gitlab": {"gl": "U0GL"},
            "email": {"dev@example.com": "U0MAIL"},
        }
    )
    assert slack_ids(policy) == [
        SlackIdRef("defaults.channel", CHANNEL, "C0DEPLOYS"),
        SlackIdRef("teams.a.channel", CHANNEL, "C0A"),
        SlackIdRef("teams.a.members[0]", USER, "U0A1"),
        SlackIdRef("teams.a.members[1]", USER, "U0A2"),
        SlackIdRef("teams.a.usergroup", GROUP, "S0A"),
        SlackIdRef("identities.github.octo", USER, "U0GH"),
        SlackIdRef("identities.gitlab.gl", USER, "U0GL"),
        SlackIdRef("identities.email['dev@example.com']", USER, "U0MAIL"),
    ]


def test_slack_ids_of_the_example_policy_cover_every_team() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    refs = slack_ids(policy)
    members = {ref.id for ref in refs if ref.kind is USER and ".members[" in ref.path}
    assert members == {m for team in policy.teams.values() for m in team.members}
    assert {ref.id for ref in refs if ref.kind is GROUP} == {
        t.usergroup for t in policy.teams.values() if t.usergroup
    }
    channels = {ref.id for ref in refs if ref.kind is CHANNEL}
    assert channels == {policy.defaults.channel} | {
        t.channel for t in policy.teams.values() if t.channel
    }


# --- whether Quorum can use a channel ------------------------------------------------------------

ALL = frozenset(BOT_SCOPES)
NO_PUBLIC = ALL - {"chat:write.public"}


@pytest.mark.parametrize(
    ("channel", "scopes", "expected"),
    [
        (ChannelInfo("C1", "ops", is_member=True), ALL, None),
        (ChannelInfo("G1", "sec", is_private=True, is_member=True), None, None),
        (None, ALL, "Slack has no channel C1 that the bot can see"),
        (ChannelInfo("C1", "ops", is_archived=True, is_member=True), ALL, "#ops (C1) is archived"),
        (ChannelInfo("C1", None, is_archived=True), ALL, "C1 is archived"),
        (
            ChannelInfo("G1", "sec", is_private=True),
            ALL,
            "the bot is not in the private channel #sec (G1); /invite @Quorum",
        ),
        (ChannelInfo("C1", "ops"), ALL, "the bot is not in #ops (C1): it can post cards there"),
        (ChannelInfo("C1", "ops"), NO_PUBLIC, "the bot is not in #ops (C1) and cannot post there"),
        (ChannelInfo("C1", "ops"), None, "the bot is not in #ops (C1); /invite @Quorum"),
    ],
)
def test_channel_refusal(
    channel: ChannelInfo | None, scopes: frozenset[str] | None, expected: str | None
) -> None:
    refusal = channel_refusal(channel.id if channel else "C1", channel, scopes=scopes)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.startswith(expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, None),
        ({"name": "ops"}, None),
        ({"id": "C1"}, ChannelInfo("C1")),  # is_member missing: not a member
        ({"id": "C1", "is_member": "yes"}, ChannelInfo("C1")),
        (
            {"id": "C1", "is_member": True, "is_archived": None},
            ChannelInfo("C1", None, False, True, True),
        ),
        (
            {"id": "G1", "is_group": True, "is_member": True},
            ChannelInfo("G1", None, True, False, True),
        ),
    ],
)
def test_channel_info_never_makes_an_odd_channel_look_usable(
    data: Any, expected: ChannelInfo | None
) -> None:
    assert channel_info(data) == expected


def test_the_fake_grants_the_manifests_scopes() -> None:
    manifest = yaml.safe_load((REPO / "manifest.yml").read_text())
    assert set(BOT_SCOPES) == set(manifest["oauth_config"]["scopes"]["bot"])


# --- the Workspace port over the fake Slack ------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def directory(slack: FakeSlack) -> SlackDirectory:
    clock = FixedClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    return SlackDirectory(make_web_client(slack.token, slack.base_url), clock)


async def test_channel_reads_conversations_info(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    slack.add_channel("C0OPS", name="ops")
    slack.add_channel("C0OLD", is_member=False, is_archived=True)

    assert await directory.channel("C0OPS") == ChannelInfo("C0OPS", "ops", is_member=True)
    assert await directory.channel("C0OLD") == ChannelInfo(
        "C0OLD", "c0old", is_archived=True, is_member=False
    )
    assert await directory.channel("C0NONE") is None
    assert [call.args["channel"] for call in slack.calls_to("conversations.info")] == [
        "C0OPS",
        "C0OLD",
        "C0NONE",
    ]


async def test_channel_raises_when_slack_cannot_be_asked(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    slack.fail_next("conversations.info", error="missing_scope")
    with pytest.raises(ChatError) as caught:
        await directory.channel("C0OPS")
    assert (caught.value.method, caught.value.error_code) == ("conversations.info", "missing_scope")


async def test_usergroup_is_none_for_no_such_subteam(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    slack.set_usergroup("S0SRE", ["U0A", "U0B"])
    assert await directory.usergroup("S0SRE") == frozenset({"U0A", "U0B"})
    assert await directory.usergroup("S0GONE") is None


async def test_scopes_come_from_the_response_header(
    slack: FakeSlack, directory: SlackDirectory
) -> None:
    assert await directory.scopes() == frozenset(BOT_SCOPES)
    slack.scopes = None
    assert await directory.scopes() is None


# --- the service over hand-written ports ---------------------------------------------------------


class _Slack:
    """Directory and Workspace in one: everyone a member, every group {U0A1}, every channel
    joined; counts the lookups in flight."""

    def __init__(self, fail_channel: str | None = None) -> None:
        self.fail_channel = fail_channel
        self.in_flight = 0
        self.most_in_flight = 0
        self.asked: list[str] = []

    async def _ask(self, key: str) -> None:
        self.asked.append(key)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1

    async def installation(self) -> Installation:
        return Installation(team_id="T1")

    async def user(self, user_id: str, *, fresh: bool = False) -> SlackUser | None:
        await self._ask(user_id)
        return SlackUser(id=user_id, team_id="T1")

    async def usergroup_members(self, usergroup: str, *, fresh: bool = False) -> frozenset[str]:
        raise AssertionError("the live check asks through Workspace.usergroup")

    async def user_by_email(self, email: str) -> str | None:
        raise AssertionError("not used")

    async def user_timezone(self, user: str) -> str | None:
        raise AssertionError("not used")

    async def usergroup(self, usergroup: str) -> frozenset[str] | None:
        await self._ask(usergroup)
        return frozenset({"U0A1"})

    async def channel(self, channel: str) -> ChannelInfo | None:
        await self._ask(channel)
        if channel == self.fail_channel:
            raise RuntimeError("Slack is down")
        return ChannelInfo(channel, is_member=True)

    async def scopes(self) -> frozenset[str] | None:
        return None


async def test_each_id_is_asked_once_within_the_concurrency_limit() -> None:
    members = [f"U0M{i}" for i in range(20)]
    policy = _policy(
        teams={
            "a": {"members": ["U0A1", "U0A2"], "usergroup": "S0A", "channel": "C0A"},
            "b": {"members": ["U0A1", *members], "channel": "C0A"},
        }
    )
    slack = _Slack()

    report = await check_live(policy, slack, slack, concurrency=3)

    assert report.findings == ()
    assert (report.users, report.usergroups, report.channels) == (22, 1, 2)
    assert sorted(slack.asked) == sorted(["S0A", "C0DEPLOYS", "C0A", "U0A1", "U0A2", *members])
    assert slack.most_in_flight == 3


async def test_a_port_failure_is_raised_not_reported() -> None:
    with pytest.raises(RuntimeError, match="Slack is down"):
        await check_live(_policy(), _Slack(fail_channel="C0A"), _Slack(fail_channel="C0A"))
