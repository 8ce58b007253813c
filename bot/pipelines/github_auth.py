"""Authenticating as a GitHub App: an RS256 JWT (PyJWT) traded for installation tokens, which are
cached until shortly before they expire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import aiohttp
import jwt

__all__ = ["GitHubAppAuth", "GitHubAuthError", "app_jwt", "github_headers"]

# GitHub refuses JWTs valid for more than 10 minutes; back-date `iat` for clock drift (GitHub's
# own advice) and keep the total under the limit.
JWT_BACKDATE: Final = timedelta(seconds=60)
JWT_LIFETIME: Final = timedelta(minutes=9)
# Installation tokens live one hour; renew a little before so that a request never carries a
# token that expires in flight.
TOKEN_REFRESH_MARGIN: Final = timedelta(minutes=5)
API_VERSION: Final = "2022-11-28"
_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class GitHubAuthError(Exception):
    """The App could not get an installation token. `permanent`: retrying will not help
    (wrong App id or key, the App was uninstalled)."""

    def __init__(self, detail: str, *, permanent: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent


def app_jwt(app_id: str, private_key: str, now: datetime) -> str:
    """The App's JWT: `iss` the App id, RS256 over the App's private key, valid ≤ 10 minutes."""
    issued = now - JWT_BACKDATE
    claims = {
        "iat": int(issued.timestamp()),
        "exp": int((now + JWT_LIFETIME).timestamp()),
        "iss": app_id,
    }
    return jwt.encode(claims, private_key, algorithm="RS256")


def github_headers(token: str, user_agent: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {token}",
        "accept": "application/vnd.github+json",
        "x-github-api-version": API_VERSION,
        "user-agent": user_agent,
    }


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"_Token(value=<redacted>, expires_at={self.expires_at!r})"


class GitHubAppAuth:
    """Installation tokens for one GitHub App, cached per installation.

    `http` returns the session to use (built after the event loop starts)."""

    def __init__(
        self,
        app_id: str,
        private_key: str,
        *,
        api_url: str,
        http: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], datetime],
        user_agent: str = "Quorum",
    ) -> None:
        self._app_id = app_id
        self.__private_key = private_key
        self._api_url = api_url.rstrip("/")
        self._http = http
        self._clock = clock
        self._user_agent = user_agent
        self._tokens: dict[int, _Token] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"GitHubAppAuth(app_id={self._app_id!r}, api_url={self._api_url!r})"

    @property
    def api_url(self) -> str:
        return self._api_url

    def forget(self, installation_id: int) -> None:
        """Drop a cached token GitHub refused (revoked, or the installation changed)."""
        self._tokens.pop(installation_id, None)

    async def installation_token(self, installation_id: int) -> str:
        """A valid token for the installation, from the cache or freshly minted."""
        cached = self._fresh(installation_id)
        if cached is not None:
            return cached
        # One exchange per installation at a time: concurrent deliveries share its result.
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._fresh(installation_id)
            if cached is not None:
                return cached
            token = await self._exchange(installation_id)
            self._tokens[installation_id] = token
            return token.value

    def _fresh(self, installation_id: int) -> str | None:
        token = self._tokens.get(installation_id)
        if token is not None and token.expires_at - self._clock() > TOKEN_REFRESH_MARGIN:
            return token.value
        return None

    async def _exchange(self, installation_id: int) -> _Token:
        now = self._clock()
        try:
            bearer = app_jwt(self._app_id, self.__private_key, now)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # The key is unusable: say what kind of problem without quoting it.
            raise GitHubAuthError(
                f"cannot sign the App JWT ({type(exc).__name__}); check GITHUB_PRIVATE_KEY",
                permanent=True,
            ) from None
        url = f"{self._api_url}/app/installations/{installation_id}/access_tokens"
        try:
            async with self._http().post(
                url,
                headers=github_headers(bearer, self._user_agent),
                timeout=_TIMEOUT,
                allow_redirects=False,
            ) as response:
                status = response.status
                data = await response.json(content_type=None) if status < 500 else None
        except TimeoutError:
            raise GitHubAuthError("installation token: timed out", permanent=False) from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise GitHubAuthError(
                f"installation token: {type(exc).__name__}", permanent=False
            ) from None
        if status == 201 and isinstance(data, dict) and isinstance(data.get("token"), str):
            expires = _parse_time(data.get("expires_at")) or now + timedelta(hours=1)
            return _Token(value=data["token"], expires_at=expires)
        message = data.get("message") if isinstance(data, dict) else None
        detail = f"installation token: HTTP {status}" + (f": {message}" if message else "")
        # 401/403/404: bad JWT, suspended or uninstalled App — an operator must act.
        permanent = status in (401, 403, 404, 422)
        raise GitHubAuthError(detail, permanent=permanent)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
