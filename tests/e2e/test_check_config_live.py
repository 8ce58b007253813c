"""`quorum check-config --live`: the real CLI entry (`bot.cli.main`) against the fake Slack Web API
on a loopback port, with the settings read from the environment as `quorum` reads them."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli import EXIT_INVALID, EXIT_OK, EXIT_SETTINGS, main
from tests.fakes.slack_api import BOT_USER_ID, FakeSlack

TOKEN = "xoxb-live-check-secret-0042"

PROBLEMS = """\
version: 1
defaults:
  channel: C0DEPLOYS
teams:
  payments:
    channel: C0GONE
    members: [U0OK, U0GUEST, U0SINGLE, U0GONE, U0DEACT, U0BOT, U0OTHER]
  sre:
    channel: C0ARCHIVED
    usergroup: S0SRE
  web:
    channel: C0NOTIN
    usergroup: S0GONE
  security:
    channel: C0SECRET
    members: [U0OK]
environments:
  production:
    rules:
      - name: owner-review
        from: payments
        approvals: 1
identities:
  github:
    octo-dev: U0GHGONE
  gitlab:
    gl-dev: U0GLGUEST
  email:
    ci@example.com: U0QUORUM
"""

CLEAN = """\
version: 1
defaults:
  channel: C0DEPLOYS
teams:
  payments:
    channel: C0PAYMENTS
    members: [U0PAY1, U0PAY2]
  sre:
    usergroup: S0SRE
identities:
  github:
    octo-dev: U0PAY1
  gitlab:
    gl-dev: U0PAY2
  email:
    ops@example.com: U0SRE1
environments:
  production:
    rules:
      - name: owner-review
        from: payments
        approvals: 1
      - name: sre-signoff
        from: sre
        approvals: 1
"""


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(TOKEN) as fake:
        yield fake


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables each test sets: nothing from the machine's own QUORUM_/SLACK_ ones."""
    for name in list(os.environ):
        if name.startswith(("QUORUM_", "SLACK_", "GITHUB_", "GITLAB_", "JENKINS_", "DATABASE_")):
            monkeypatch.delenv(name)


async def _run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    policy: Path,
    **env: str,
) -> tuple[int, list[str], str]:
    """Run `quorum check-config --live POLICY` with `env`; (exit code, stderr lines, stdout)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The CLI runs its own event loop (asyncio.run); the fake serves from this test's loop.
    code = await asyncio.to_thread(main, ["check-config", "--live", str(policy)])
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "Traceback" not in err
    return code, err.splitlines(), out


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quorum.yml"
    path.write_text(textwrap.dedent(text))
    return path


def _slack_env(slack: FakeSlack) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": slack.token, "SLACK_API_URL": slack.base_url}


async def test_every_problem_is_reported_with_its_key_path(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slack.add_user("U0GUEST", is_restricted=True)
    slack.add_user("U0SINGLE", is_ultra_restricted=True)
    slack.remove_user("U0GONE")
    slack.add_user("U0DEACT", deleted=True)
    slack.add_user("U0BOT", is_bot=True)
    slack.add_user("U0OTHER", team_id="T0OTHER", is_stranger=True)
    slack.remove_user("U0GHGONE")
    slack.add_user("U0GLGUEST", is_restricted=True)
    slack.set_usergroup("S0SRE", ["U0SRE1", "U0GUEST", "U0DEACT"])
    slack.add_channel("C0DEPLOYS")
    slack.add_channel("C0ARCHIVED", is_archived=True, name="sre-old")
    slack.add_channel("C0NOTIN", is_member=False, name="web-deploys")
    # C0GONE and C0SECRET are unknown (a private channel the bot is not in looks the same).
    policy = _write(tmp_path, PROBLEMS)

    code, lines, out = await _run(monkeypatch, capsys, policy, **_slack_env(slack))

    assert code == EXIT_INVALID
    assert out == ""  # no ok line when something is wrong
    prefix = f"{policy}: "
    assert all(line.startswith(prefix) for line in lines), lines
    found = [tuple(line.removeprefix(prefix).split(": ", 1)) for line in lines]
    assert [path for path, _ in found] == [
        "teams.payments.channel",
        "teams.payments.members[1]",
        "teams.payments.members[2]",
        "teams.payments.members[3]",
        "teams.payments.members[4]",
        "teams.payments.members[5]",
        "teams.payments.members[6]",
        "teams.sre.channel",
        "teams.sre.usergroup",
        "teams.sre.usergroup",
        "teams.web.channel",
        "teams.web.usergroup",
        "teams.security.channel",
        "identities.github.octo-dev",
        "identities.gitlab.gl-dev",
        "identities.email['ci@example.com']",
    ]
    expected = [
        "Slack has no channel C0GONE that the bot can see",
        "U0GUEST is a guest of this workspace",
        "U0SINGLE is a guest of this workspace",
        "Slack does not know the user U0GONE",
        "U0DEACT's Slack account is deactivated",
        "U0BOT is a bot or app user",
        "U0OTHER belongs to another organisation (Slack Connect)",
        "#sre-old (C0ARCHIVED) is archived",
        "warning: member U0DEACT's Slack account is deactivated",
        "warning: member U0GUEST is a guest of this workspace",
        # The app has chat:write.public (manifest.yml): cards post, ephemeral answers do not.
        "the bot is not in #web-deploys (C0NOTIN): it can post cards there (chat:write.public)",
        "Slack has no user group S0GONE",
        "Slack has no channel C0SECRET that the bot can see (a private channel must invite",
        "Slack does not know the user U0GHGONE",
        "U0GLGUEST is a guest of this workspace",
        f"{BOT_USER_ID} is a bot or app user",
    ]
    assert len(found) == len(expected)
    for (path, message), start in zip(found, expected, strict=True):
        assert message.startswith(start), (path, message)
    assert "/invite @Quorum" in dict(found)["teams.web.channel"]
    assert not any(re.search(r"<@\w+>", line) for line in lines)  # no Slack markup on a terminal
    assert not any(message.endswith(".") for _, message in found)


async def test_a_clean_policy_passes_and_says_what_was_checked(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slack.set_usergroup("S0SRE", ["U0SRE1", "U0SRE2"])
    slack.add_channel("C0DEPLOYS")
    slack.add_channel("C0PAYMENTS")
    policy = _write(tmp_path, CLEAN)

    code, lines, out = await _run(monkeypatch, capsys, policy, **_slack_env(slack))

    assert (code, lines) == (EXIT_OK, [])
    assert out.splitlines() == [
        "ok: 2 teams, 0 services, 1 environment",
        "live: 4 users, 1 user group, 2 channels checked",
    ]
    asked = {call.method for call in slack.calls}
    assert {"conversations.info", "usergroups.users.list", "users.info", "auth.test"} <= asked
    # Each id is asked about once, however often the policy names it.
    users = [call.args["user"] for call in slack.calls_to("users.info")]
    assert sorted(users) == ["U0PAY1", "U0PAY2", "U0SRE1", "U0SRE2"]


async def test_group_members_who_never_count_are_warnings_only(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slack.set_usergroup("S0SRE", ["U0SRE1", "U0SREGUEST"])
    slack.add_user("U0SREGUEST", is_ultra_restricted=True)
    slack.add_channel("C0DEPLOYS")
    slack.add_channel("C0PAYMENTS")
    policy = _write(tmp_path, CLEAN)

    code, lines, out = await _run(monkeypatch, capsys, policy, **_slack_env(slack))

    assert code == EXIT_OK
    assert lines == [
        f"{policy}: teams.sre.usergroup: warning: member U0SREGUEST is a guest of this "
        "workspace; guests may not approve deployments (members who fail these checks never "
        "count)"
    ]
    assert out.splitlines()[1] == "live: 4 users, 1 user group, 2 channels checked"


async def test_without_chat_write_public_a_public_channel_needs_the_bot(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slack.scopes = tuple(s for s in slack.scopes or () if s != "chat:write.public")
    slack.set_usergroup("S0SRE", ["U0SRE1"])
    slack.add_channel("C0DEPLOYS")
    slack.add_channel("C0PAYMENTS", is_member=False, name="payments")
    policy = _write(tmp_path, CLEAN)

    code, lines, _ = await _run(monkeypatch, capsys, policy, **_slack_env(slack))

    assert code == EXIT_INVALID
    assert lines == [
        f"{policy}: teams.payments.channel: the bot is not in #payments (C0PAYMENTS) and cannot "
        "post there without chat:write.public; /invite @Quorum"
    ]


async def test_a_missing_token_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = _write(tmp_path, CLEAN)

    code, lines, out = await _run(monkeypatch, capsys, policy)
    assert code == EXIT_SETTINGS
    assert len(lines) == 1
    assert "SLACK_BOT_TOKEN" in lines[0]
    assert out == ""

    # QUORUM_DEV's labelled local development token cannot ask Slack either.
    code, lines, _ = await _run(monkeypatch, capsys, policy, QUORUM_DEV="1")
    assert code == EXIT_SETTINGS
    assert len(lines) == 1
    assert "SLACK_BOT_TOKEN" in lines[0]


async def test_slack_failing_is_one_line_without_the_token(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = _write(tmp_path, CLEAN)
    slack.add_channel("C0DEPLOYS")
    slack.set_usergroup("S0SRE", [])
    slack.fail_next("conversations.info", status=503)

    code, lines, out = await _run(monkeypatch, capsys, policy, **_slack_env(slack))

    assert code == EXIT_SETTINGS
    assert lines == ["quorum: could not reach Slack: conversations.info: internal_error"]
    assert out == ""


async def test_slack_unreachable_is_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = _write(tmp_path, CLEAN)

    code, lines, _ = await _run(
        monkeypatch,
        capsys,
        policy,
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_API_URL=f"http://127.0.0.1:{port}/api/",
    )

    assert code == EXIT_SETTINGS
    assert lines == ["quorum: could not reach Slack: auth.test: transport_error"]


async def test_an_invalid_policy_is_reported_before_asking_slack(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = _write(tmp_path, CLEAN.replace("channel: C0DEPLOYS", "channel: '#deploys'"))

    code, lines, _ = await _run(monkeypatch, capsys, policy, **_slack_env(slack))

    assert code == EXIT_INVALID
    assert lines[0].startswith(f"{policy}: defaults.channel: '#deploys' is not a Slack channel id")
    assert slack.calls == []
