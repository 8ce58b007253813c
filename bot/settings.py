"""Process settings, read once from the environment into one frozen object (secrets: SecretStr)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.domain.durations import parse_duration

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./quorum.db"

# Clearly labelled values for `make run` on a laptop with no Slack app configured.
DEV_VALUES: Mapping[str, str] = {
    "slack_bot_token": "xoxb-quorum-local-development-only",
    "slack_signing_secret": "quorum-local-development-signing-secret",
    "quorum_webhook_secret": "whsec_cXVvcnVtLWxvY2FsLWRldmVsb3BtZW50LW9ubHk=",
    "quorum_api_token": "quorum-local-development-api-token",
}

_DB_SCHEMES = ("sqlite+aiosqlite://", "postgresql+asyncpg://")


class SettingsError(Exception):
    """Invalid process settings; each line names the variable and the problem, never a value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    """Every setting Quorum reads. Field names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None  # Socket Mode (later)
    slack_api_url: str | None = None  # Web API base URL override (tests, sandbox)

    # Storage and policy
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)  # may carry a password
    quorum_config: Path = Path("./quorum.yml")
    # SQLite: run the vote writer's transactions on the event loop's thread (storage/sqlite_driver)
    quorum_sqlite_inline_writes: bool = True

    # HTTP server
    quorum_host: str = "127.0.0.1"
    quorum_port: int = Field(default=3000, ge=1, le=65535)
    quorum_public_url: str | None = None  # base of status_url links; defaults to http://host:port

    # Pipelines
    quorum_webhook_secret: SecretStr | None = None  # whsec_… (space-separated for rotation)
    quorum_callback_secret: SecretStr | None = None  # defaults to the first webhook secret
    quorum_api_token: SecretStr | None = None  # bearer token for GET /api/v1/requests/{id}
    quorum_callback_retry_window: timedelta = timedelta(hours=24)
    quorum_webhook_retention: timedelta = timedelta(days=8)  # how long webhook ids are remembered
    github_webhook_secret: SecretStr | None = None
    github_app_id: str | None = None
    github_private_key: SecretStr | None = None
    github_private_key_file: Path | None = None
    github_api_url: str = "https://api.github.com"
    gitlab_url: str | None = None
    gitlab_token: SecretStr | None = None
    gitlab_webhook_token: SecretStr | None = None
    gitlab_webhook_signing_secret: SecretStr | None = None  # whsec_… (GitLab's signed webhooks)
    jenkins_url: str | None = None  # only input steps under this URL get Jenkins credentials
    jenkins_user: str | None = None
    jenkins_api_token: SecretStr | None = None

    # Operations
    quorum_dev: bool = False  # use labelled local development values for missing Slack settings
    quorum_log_level: str = "INFO"

    @field_validator("quorum_callback_retry_window", "quorum_webhook_retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)
        return value

    @field_validator("quorum_webhook_retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        # Pipelines redeliver a webhook for minutes to hours; forgetting its id sooner would
        # let a redelivery open a second request.
        if value < timedelta(hours=1):
            raise ValueError("expected at least 1h")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(_DB_SCHEMES):
            raise ValueError(f"expected a URL starting with {' or '.join(_DB_SCHEMES)}")
        return value

    @field_validator(
        "slack_api_url", "quorum_public_url", "github_api_url", "gitlab_url", "jenkins_url"
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("expected an http(s) URL")
        return value

    @field_validator(
        "quorum_webhook_secret", "quorum_callback_secret", "gitlab_webhook_signing_secret"
    )
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for part in value.get_secret_value().split():
                if not re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", part):
                    raise ValueError(
                        "expected one or more space-separated 'whsec_<base64>' secrets"
                    )
        return value

    @field_validator("quorum_log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _dev_values(self) -> Self:
        if self.quorum_dev:
            for name, value in DEV_VALUES.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, SecretStr(value))
        return self

    # Derived values ---------------------------------------------------------------------------

    @property
    def database_url_value(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url_value.startswith("sqlite")

    @property
    def public_url(self) -> str:
        return (self.quorum_public_url or f"http://{self.quorum_host}:{self.quorum_port}").rstrip(
            "/"
        )

    @property
    def webhook_secrets(self) -> list[str]:
        if self.quorum_webhook_secret is None:
            return []
        return self.quorum_webhook_secret.get_secret_value().split()

    @property
    def callback_secret(self) -> str | None:
        if self.quorum_callback_secret is not None:
            return self.quorum_callback_secret.get_secret_value().split()[0]
        secrets = self.webhook_secrets
        return secrets[0] if secrets else None

    def uses_dev_values(self) -> list[str]:
        """Names of the settings that hold a local development value."""
        return [
            name.upper()
            for name, value in DEV_VALUES.items()
            if (secret := getattr(self, name)) is not None and secret.get_secret_value() == value
        ]

    def require_for_serve(self) -> None:
        """Check what `quorum serve` cannot run without."""
        hint = " (required to serve; for local development set QUORUM_DEV=1)"
        missing = [
            f"{name.upper()}: missing{hint}"
            for name in ("slack_bot_token", "slack_signing_secret", "quorum_webhook_secret")
            if getattr(self, name) is None
        ]
        if missing:
            raise SettingsError(missing)


class _ExplicitSettings(Settings):
    """Settings built from a given mapping only (tests): the environment is not read."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from `environ` (default: the process environment) plus overrides.

    Raises SettingsError naming each bad variable; values never appear in the message.
    """
    try:
        if environ is None:
            return Settings(**overrides)
        data: dict[str, Any] = {
            k.lower(): v for k, v in environ.items() if k.lower() in Settings.model_fields
        }
        data.update(overrides)
        return _ExplicitSettings(**data)
    except ValidationError as exc:
        raise SettingsError([_describe(err) for err in exc.errors()]) from None


def _describe(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ("settings",)
    name = str(loc[0]).upper()
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return f"{name}: {message}"
