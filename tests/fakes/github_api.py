"""A fake GitHub REST API for a GitHub App: installation tokens against a JWT verified with the
App's public key, and deployment protection rule reviews / status reports checked against the
installation token it issued."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.loopback import LoopbackServer, Recorded

APP_ID = "424242"
INSTALLATION_ID = 35490125  # the one in shared/fixtures/github/deployment_review.requested.json


@dataclass(frozen=True, slots=True)
class AppKey:
    """An RSA key pair generated for the test (PEM strings)."""

    private_pem: str
    public_pem: str

    @classmethod
    def generate(cls) -> AppKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        return cls(private_pem=private, public_pem=public)


class FakeGitHub(LoopbackServer):
    """`POST /app/installations/{id}/access_tokens` and
    `POST /repos/{owner}/{repo}/actions/runs/{run}/deployment_protection_rule`."""

    def __init__(
        self,
        public_pem: str,
        app_id: str = APP_ID,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__()
        self.clock = clock  # GitHub's idea of now: tests on a fixed clock share theirs
        self._public_pem = public_pem
        self._app_id = app_id
        self._serial = itertools.count(1)
        self.tokens: dict[str, int] = {}  # issued token → installation id
        self.token_lifetime = timedelta(hours=1)
        self.exchanges = 0
        self.review_statuses: list[tuple[int, dict[str, Any]]] = []  # queued answers

    def callback_url(self, repo: str = "acme/storefront", run_id: int = 5453085689) -> str:
        return f"{self.base_url}/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/app/installations/{installation}/access_tokens", self._token)
        app.router.add_post(
            "/repos/{owner}/{repo}/actions/runs/{run}/deployment_protection_rule", self._review
        )

    async def _token(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            await self.refuse("no bearer JWT")
            return web.json_response(
                {"message": "A JSON web token could not be decoded"}, status=401
            )
        try:
            claims = jwt.decode(
                auth.removeprefix("Bearer "),
                self._public_pem,
                algorithms=["RS256"],
                # Times are checked below against the fake's clock, not the host's.
                options={
                    "require": ["iat", "exp", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            await self.refuse(f"bad JWT: {type(exc).__name__}")
            return web.json_response(
                {"message": "A JSON web token could not be decoded"}, status=401
            )
        now = self.clock().timestamp()
        if not claims["iat"] <= now + 30 < claims["exp"] + 30 or claims["exp"] <= now:
            await self.refuse("JWT expired or not yet valid")
            return web.json_response({"message": "'Expiration time' claim is invalid"}, status=401)
        if str(claims["iss"]) != self._app_id or claims["exp"] - claims["iat"] > 600:
            await self.refuse("JWT has the wrong issuer or lives longer than 10 minutes")
            return web.json_response({"message": "'Expiration time' claim is too far"}, status=401)
        installation = int(request.match_info["installation"])
        token = f"ghs_fake{next(self._serial):04d}"
        self.tokens[token] = installation
        self.exchanges += 1
        expires = self.clock() + self.token_lifetime
        return web.json_response(
            {"token": token, "expires_at": expires.isoformat().replace("+00:00", "Z")},
            status=201,
        )

    async def _review(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").removeprefix("token ")
        if token not in self.tokens:
            await self.refuse("unknown installation token")
            return web.json_response({"message": "Bad credentials"}, status=401)
        body = json.loads(await request.read())
        status, answer = self.review_statuses.pop(0) if self.review_statuses else (204, {})
        await self.record(
            Recorded(
                path=request.path,
                body=body,
                headers=dict(request.headers),
                status=status,
                extra={"installation": self.tokens[token]},
            )
        )
        if status == 204:
            return web.Response(status=204)
        return web.json_response(answer, status=status)

    def reviews(self) -> list[Recorded]:
        """Answers with a `state` (approved / rejected) that GitHub accepted."""
        return [r for r in self.recorded if "state" in r.body and r.status == 204]

    def reports(self) -> list[Recorded]:
        """Status reports (no `state`)."""
        return [r for r in self.recorded if "state" not in r.body]
