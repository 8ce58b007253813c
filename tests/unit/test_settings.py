"""Settings: defaults, validation errors that name the variable, secrets never printed."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, load_settings
from tests.paths import REPO

SECRET = "xoxb-very-secret-token-value"


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.database_url_value == DEFAULT_DATABASE_URL
    assert settings.quorum_config == Path("./quorum.yml")
    assert (settings.quorum_host, settings.quorum_port) == ("127.0.0.1", 3000)
    assert settings.quorum_callback_retry_window == timedelta(hours=24)
    assert settings.quorum_webhook_retention == timedelta(days=8)
    assert settings.is_sqlite


def test_webhook_retention_is_a_duration_of_at_least_an_hour() -> None:
    assert load_settings({"QUORUM_WEBHOOK_RETENTION": "2w"}).quorum_webhook_retention == (
        timedelta(days=14)
    )


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.quorum_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QUORUM_PORT": "eighty"}, "QUORUM_PORT: Input should be a valid integer"),
        ({"QUORUM_PORT": "70000"}, "QUORUM_PORT: Input should be less than or equal to 65535"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: expected a URL starting with"),
        ({"SLACK_API_URL": "localhost:9"}, "SLACK_API_URL: expected an http(s) URL"),
        ({"QUORUM_WEBHOOK_SECRET": "plain"}, "QUORUM_WEBHOOK_SECRET: expected one or more"),
        ({"QUORUM_CALLBACK_RETRY_WINDOW": "soon"}, "QUORUM_CALLBACK_RETRY_WINDOW:"),
        ({"QUORUM_WEBHOOK_RETENTION": "soon"}, "QUORUM_WEBHOOK_RETENTION: invalid duration"),
        ({"QUORUM_WEBHOOK_RETENTION": "30m"}, "QUORUM_WEBHOOK_RETENTION: expected at least 1h"),
        ({"QUORUM_LOG_LEVEL": "LOUD"}, "QUORUM_LOG_LEVEL: expected one of"),
    ],
)
def test_malformed_setting_names_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(expected)


def test_secret_values_never_appear_in_errors_or_reprs() -> None:
    bad = "whsec_" + "not base64 at all!" + SECRET
    with pytest.raises(SettingsError) as info:
        load_settings({"QUORUM_WEBHOOK_SECRET": bad, "DATABASE_URL": "mysql://u:" + SECRET})
    assert SECRET not in str(info.value)
    settings = load_settings({"SLACK_BOT_TOKEN": SECRET})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == SECRET


def test_serve_requires_slack_credentials_unless_dev() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({}).require_for_serve()
    assert [p.split(":")[0] for p in info.value.problems] == [
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "QUORUM_WEBHOOK_SECRET",
        "QUORUM_CALLBACK_SIGNING_KEY_FILE",
    ]
    dev = load_settings({"QUORUM_DEV": "1"})
    dev.require_for_serve()
    assert "SLACK_BOT_TOKEN" in dev.uses_dev_values()


def test_rotation_and_no_callback_secret_fallback() -> None:
    a, b = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2Vjb25k"
    settings = load_settings({"QUORUM_WEBHOOK_SECRET": f"{a} {b}"})
    assert settings.webhook_secrets == [a, b]
    assert settings.callback_secrets == []  # never the webhook secret
    assert not settings.ephemeral_callback_key
    c = "whsec_" + "Y2FsbGJhY2tzIG9ubHkgY2FsbGJhY2tz"
    assert load_settings({"QUORUM_CALLBACK_SECRET": f"{c} {b}"}).callback_secrets == [c, b]


def test_explicit_settings_do_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_PORT", "4000")
    assert load_settings({}).quorum_port == 3000
    assert Settings().quorum_port == 4000


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


def test_cli_exits_2_with_one_line_for_a_malformed_setting() -> None:
    result = _quorum("serve", env={"QUORUM_PORT": "x", "SLACK_BOT_TOKEN": SECRET})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "quorum: setting QUORUM_PORT: Input should be a valid integer, unable to "
        "parse string as an integer"
    ]
    assert SECRET not in result.stdout + result.stderr


def test_cli_serve_without_credentials_exits_2() -> None:
    result = _quorum("serve", env={})
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN: missing" in result.stderr
