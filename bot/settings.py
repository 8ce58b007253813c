"""Process settings, read once from the environment into one frozen object (secrets: SecretStr)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.domain.durations import parse_duration
from bot.pipelines.egress import EgressConfigError, EgressPolicy

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
    # Serving limits, in seconds and counts (bot/serving.py; docs/architecture.md)
    quorum_header_timeout: float = Field(default=10.0, gt=0)  # a request head must arrive by then
    quorum_body_timeout: float = Field(default=30.0, gt=0)  # ... and its body by then after it
    quorum_keepalive_timeout: float = Field(default=5.0, gt=0)  # idle keep-alive connections
    # 0: no cap (behind a proxy that hides client addresses every client is the proxy)
    quorum_max_connections_per_client: int = Field(default=64, ge=0)
    quorum_descriptor_reserve: int = Field(default=128, ge=0)  # descriptors kept from clients
    quorum_connection_report_interval: float = Field(default=60.0, gt=0)  # one log line each

    # Pipelines
    quorum_webhook_secret: SecretStr | None = None  # whsec_… (space-separated for rotation)
    # Callbacks are signed with a key of their own (docs/pipelines/generic.md "Verifying"):
    # an Ed25519 key file (`v1a`, public key at GET /api/v1/keys) and/or a distinct secret (`v1`)
    quorum_callback_signing_key_file: Path | None = None
    quorum_callback_secret: SecretStr | None = None  # whsec_…; never equal to an inbound secret
    quorum_api_token: SecretStr | None = None  # bearer token for GET /api/v1/requests/{id}
    quorum_callback_retry_window: timedelta = timedelta(hours=24)
    # Hosts, *.wildcards and CIDRs webhook-named URLs may reach (empty: public addresses only)
    quorum_egress_allow: str = ""
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

    @field_validator("quorum_egress_allow")
    @classmethod
    def _egress_allow(cls, value: str) -> str:
        try:
            EgressPolicy.parse(value)
        except EgressConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("quorum_log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _jenkins_pinned(self) -> Self:
        # Jenkins credentials answer any input step: they go only to the configured Jenkins,
        # never to a host a webhook names.
        if (self.jenkins_user or self.jenkins_api_token is not None) and not self.jenkins_url:
            raise ValueError(
                "JENKINS_URL: required when JENKINS_USER or JENKINS_API_TOKEN is set "
                "(Jenkins credentials are only sent to input steps under JENKINS_URL)"
            )
        return self

    @model_validator(mode="after")
    def _callback_secret_distinct(self) -> Self:
        # Whoever holds an inbound secret may ask for a deploy; with the same secret they could
        # also forge the decision a receiver acts on.
        if self.quorum_callback_secret is None:
            return self
        inbound = _inbound_secrets(self)
        for position, secret in enumerate(self.callback_secrets, start=1):
            for name, other in inbound:
                if _same_key(secret, other):
                    raise ValueError(
                        f"QUORUM_CALLBACK_SECRET: secret #{position} equals a secret in {name}; "
                        "callbacks need a secret of their own (or an Ed25519 key: "
                        "QUORUM_CALLBACK_SIGNING_KEY_FILE)"
                    )
        return self

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
    def egress_policy(self) -> EgressPolicy:
        """QUORUM_EGRESS_ALLOW, parsed (bot/pipelines/egress.py)."""
        return EgressPolicy.parse(self.quorum_egress_allow)

    @property
    def webhook_secrets(self) -> list[str]:
        if self.quorum_webhook_secret is None:
            return []
        return self.quorum_webhook_secret.get_secret_value().split()

    @property
    def callback_secrets(self) -> list[str]:
        """QUORUM_CALLBACK_SECRET's secrets (rotation: callbacks carry one `v1` per secret).
        There is no fallback to an inbound secret."""
        if self.quorum_callback_secret is None:
            return []
        return self.quorum_callback_secret.get_secret_value().split()

    @property
    def ephemeral_callback_key(self) -> bool:
        """Local development with no callback key or secret: a key is generated at start (its
        public key is logged and served at GET /api/v1/keys) and lives as long as the process."""
        return (
            self.quorum_dev
            and self.quorum_callback_signing_key_file is None
            and self.quorum_callback_secret is None
        )

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
        # Every generic request may name a callback_url: serving without a way to sign its
        # decision would mean decisions nobody can trust (they are never sent unsigned).
        if (
            self.quorum_callback_signing_key_file is None
            and self.quorum_callback_secret is None
            and not self.quorum_dev
        ):
            missing.append(
                "QUORUM_CALLBACK_SIGNING_KEY_FILE: missing (callbacks are signed with a key of "
                "their own: create one with `quorum keys generate --out FILE`, or set "
                "QUORUM_CALLBACK_SECRET to a secret distinct from every inbound one; for local "
                "development set QUORUM_DEV=1)"
            )
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
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    loc = error.get("loc")
    if not loc:  # a check across settings: its message starts with the variable it names
        return message if re.match(r"[A-Z_]+: ", message) else f"SETTINGS: {message}"
    return f"{str(loc[0]).upper()}: {message}"


def _inbound_secrets(settings: Settings) -> list[tuple[str, str]]:
    """Every secret a sender signs inbound webhooks with, named by its variable."""
    found: list[tuple[str, str]] = []
    for name in (
        "quorum_webhook_secret",
        "github_webhook_secret",
        "gitlab_webhook_signing_secret",
        "gitlab_webhook_token",
    ):
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.extend((name.upper(), part) for part in value.get_secret_value().split())
    return found


def _key_material(secret: str) -> bytes:
    """The HMAC key a secret stands for: base64-decoded after `whsec_` (padding aside), else its
    UTF-8 bytes (GitHub's and GitLab's secrets are used as they are)."""
    if secret.startswith("whsec_"):
        encoded = secret.removeprefix("whsec_")
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            pass
    return secret.encode()


def _same_key(a: str, b: str) -> bool:
    return a == b or _key_material(a) in (_key_material(b), b.encode())
