"""Callback signing settings and `quorum keys`: a key of their own, never an inbound secret."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.pipelines.callback_keys import CallbackKey
from bot.settings import SettingsError, load_settings
from tests.paths import REPO

WEBHOOK = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CALLBACK = "whsec_" + base64.b64encode(b"a callback secret, only that").decode()
GITHUB = "a-github-webhook-secret"
SERVE = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s",
    "QUORUM_WEBHOOK_SECRET": WEBHOOK,
}


@pytest.mark.parametrize(
    ("inbound", "callback", "named"),
    [
        ({"QUORUM_WEBHOOK_SECRET": WEBHOOK}, WEBHOOK, "QUORUM_WEBHOOK_SECRET"),
        # Rotation lists: any one entry equal to any other is refused.
        ({"QUORUM_WEBHOOK_SECRET": f"{CALLBACK} {WEBHOOK}"}, WEBHOOK, "QUORUM_WEBHOOK_SECRET"),
        ({"QUORUM_WEBHOOK_SECRET": WEBHOOK}, f"{CALLBACK} {WEBHOOK}", "QUORUM_WEBHOOK_SECRET"),
        # The same key bytes with other padding is the same key.
        (
            {"QUORUM_WEBHOOK_SECRET": "whsec_YWJjZA=="},
            "whsec_YWJjZA",
            "QUORUM_WEBHOOK_SECRET",
        ),
        ({"GITHUB_WEBHOOK_SECRET": CALLBACK}, CALLBACK, "GITHUB_WEBHOOK_SECRET"),
        # A GitHub secret is used as its bytes: a whsec_ of those bytes is the same HMAC key.
        (
            {"GITHUB_WEBHOOK_SECRET": GITHUB},
            "whsec_" + base64.b64encode(GITHUB.encode()).decode(),
            "GITHUB_WEBHOOK_SECRET",
        ),
        ({"GITLAB_WEBHOOK_SIGNING_SECRET": CALLBACK}, CALLBACK, "GITLAB_WEBHOOK_SIGNING_SECRET"),
        ({"GITLAB_WEBHOOK_TOKEN": f"tok {CALLBACK}"}, CALLBACK, "GITLAB_WEBHOOK_TOKEN"),
    ],
)
def test_a_callback_secret_equal_to_an_inbound_secret_is_refused(
    inbound: dict[str, str], callback: str, named: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({**inbound, "QUORUM_CALLBACK_SECRET": callback})
    [problem] = info.value.problems
    assert problem.startswith("QUORUM_CALLBACK_SECRET: ")
    assert named in problem
    for value in (*inbound.values(), callback):
        for part in value.split():
            assert part.removeprefix("whsec_") not in problem  # never a value


def test_a_distinct_callback_secret_is_accepted() -> None:
    settings = load_settings(
        {**SERVE, "GITHUB_WEBHOOK_SECRET": GITHUB, "QUORUM_CALLBACK_SECRET": CALLBACK}
    )
    assert settings.callback_secrets == [CALLBACK]
    settings.require_for_serve()


def test_serving_needs_a_callback_key_or_secret_unless_dev(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(SERVE).require_for_serve()
    [problem] = info.value.problems
    assert problem.startswith("QUORUM_CALLBACK_SIGNING_KEY_FILE: missing")
    assert "quorum keys generate" in problem
    key_file = tmp_path / "k"
    load_settings({**SERVE, "QUORUM_CALLBACK_SIGNING_KEY_FILE": str(key_file)}).require_for_serve()

    dev = load_settings({"QUORUM_DEV": "1"})
    dev.require_for_serve()
    assert dev.ephemeral_callback_key
    assert dev.callback_secrets == []  # not the dev webhook secret either
    assert not load_settings(
        {"QUORUM_DEV": "1", "QUORUM_CALLBACK_SIGNING_KEY_FILE": str(key_file)}
    ).ephemeral_callback_key


def _quorum(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("QUORUM_", "SLACK_"))}
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "bot", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_quorum_keys_generate_then_show(tmp_path: Path) -> None:
    path = tmp_path / "callback.key"
    made = _quorum("keys", "generate", "--out", str(path), env={})
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = CallbackKey.from_file(path)
    secret = path.read_text().split("secret_key: ")[1].strip()
    assert secret not in made.stdout

    shown = _quorum("keys", env={"QUORUM_CALLBACK_SIGNING_KEY_FILE": str(path)})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        f"key_id: {key.public.key_id}",
        "algorithm: ed25519 (Standard Webhooks v1a)",
        f"created: {key.public.created.isoformat().replace('+00:00', 'Z')}",
        f"public_key: {key.public.public_key}",
    ]
    assert secret not in shown.stdout + shown.stderr
    assert f"public_key: {key.public.public_key}" in made.stdout

    again = _quorum("keys", "generate", "--out", str(path), env={})
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert CallbackKey.from_file(path).public == key.public  # not replaced


def test_quorum_keys_without_or_with_a_bad_key_file(tmp_path: Path) -> None:
    missing = _quorum("keys", env={})
    assert missing.returncode == 2
    assert "QUORUM_CALLBACK_SIGNING_KEY_FILE: missing" in missing.stderr
    bad = tmp_path / "bad.key"
    bad.write_text("created: 2026-01-01T00:00:00Z\nsecret_key: whsk_AAAA\n")
    result = _quorum("keys", env={"QUORUM_CALLBACK_SIGNING_KEY_FILE": str(bad)})
    assert result.returncode == 2
    assert "neither 32 nor 64 bytes" in result.stderr


def test_serve_refuses_a_bad_key_file_before_listening(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("nonsense\n")
    policy = REPO / "examples" / "quorum.yml"
    result = _quorum(
        "serve",
        env={
            **SERVE,
            "QUORUM_CONFIG": str(policy),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'q.db'}",
            "QUORUM_PORT": "1",  # never reached: the key is read first
            "QUORUM_CALLBACK_SIGNING_KEY_FILE": str(bad),
        },
    )
    assert result.returncode == 2, result.stderr
    assert "QUORUM_CALLBACK_SIGNING_KEY_FILE:" in result.stderr
    assert "line 1" in result.stderr
