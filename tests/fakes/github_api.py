"""A fake GitHub REST API for a GitHub App: installation tokens against a JWT verified with the
App's public key, deployment protection rule reviews / status reports and workflow runs
(`GET /repos/{owner}/{repo}/actions/runs/{run_id}`) checked against the installation token it
issued.

Runs are served in the REST API's own shape: tests/fixtures/github/workflow_run.json is the
`workflow-run` example of github/rest-api-description
(descriptions/api.github.com/api.github.com.2022-11-28.yaml, `components.examples.workflow-run`,
the documented response of "Get a workflow run"), with the run's id, repository and actors
replaced. Who started a run is `actor` (its first attempt) and `triggering_actor` (this attempt),
each a simple user with `login` and `type` (`User`, `Bot`)."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import quote

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.loopback import LoopbackServer, Recorded
from tests.paths import FIXTURES

APP_ID = "424242"
INSTALLATION_ID = 35490125  # the one in shared/fixtures/github/deployment_review.requested.json
RUN_ID = 5453085689  # the workflow run of the callback URLs below
_RUN_NOT_FOUND = {
    "message": "Not Found",
    "documentation_url": "https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run",
    "status": "404",
}


@cache
def _run_example() -> dict[str, Any]:
    data = json.loads((FIXTURES / "github" / "workflow_run.json").read_text())
    assert isinstance(data, dict)
    return data


def run_user(login: str, type_: str = "User") -> dict[str, Any]:
    """A simple user as a run names it: the example's `octocat`, renamed."""
    user = copy.deepcopy(_run_example()["actor"])
    text = json.dumps(user).replace("/users/octocat", f"/users/{quote(login)}")
    user = json.loads(text)
    user["login"] = login
    user["type"] = type_
    return dict(user)


def workflow_run(
    repo: str,
    run_id: int,
    *,
    actor: dict[str, Any] | None,
    triggering_actor: dict[str, Any] | None,
) -> dict[str, Any]:
    """The REST example of a run, as a run of `repo` with these actors (None: the key absent)."""
    text = json.dumps(_run_example())
    for old in ("octo-org/octo-repo", "octocat/Hello-World"):
        text = text.replace(old, repo)
    run: dict[str, Any] = json.loads(text.replace("/runs/30433642", f"/runs/{run_id}"))
    run["id"] = run_id
    for key, user in (("actor", actor), ("triggering_actor", triggering_actor)):
        if user is None:
            run.pop(key)
        else:
            run[key] = user
    return run


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
    """`POST /app/installations/{id}/access_tokens`,
    `POST /repos/{owner}/{repo}/actions/runs/{run}/deployment_protection_rule` and
    `GET /repos/{owner}/{repo}/actions/runs/{run}` (the runs added with `add_run`, else 404).

    Run lookups are recorded in `run_lookups`, apart from `recorded` (reviews and reports)."""

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
        self.runs: dict[tuple[str, int], dict[str, Any]] = {}  # (repo lowercased, id) → run
        self.run_statuses: list[tuple[int, dict[str, Any]]] = []  # queued answers to lookups
        self.run_lookups: list[Recorded] = []

    def callback_url(self, repo: str = "acme/storefront", run_id: int = RUN_ID) -> str:
        return f"{self.base_url}/repos/{repo}/actions/runs/{run_id}/deployment_protection_rule"

    def add_run(
        self,
        repo: str = "acme/storefront",
        run_id: int = RUN_ID,
        *,
        actor: str | None = "octo-web",
        actor_type: str = "User",
        triggering_actor: str | None = None,
        triggering_type: str = "User",
    ) -> dict[str, Any]:
        """Serve a run; `triggering_actor` None: the same as `actor` (a first attempt)."""
        first = run_user(actor, actor_type) if actor else None
        trigger = run_user(triggering_actor, triggering_type) if triggering_actor else first
        run = workflow_run(repo, run_id, actor=first, triggering_actor=trigger)
        self.runs[(repo.lower(), run_id)] = run
        return run

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/app/installations/{installation}/access_tokens", self._token)
        app.router.add_post(
            "/repos/{owner}/{repo}/actions/runs/{run}/deployment_protection_rule", self._review
        )
        app.router.add_get("/repos/{owner}/{repo}/actions/runs/{run}", self._run)

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

    async def _run(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").removeprefix("token ")
        if token not in self.tokens:
            await self.refuse("unknown installation token")
            return web.json_response({"message": "Bad credentials"}, status=401)
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}".lower()
        run = self.runs.get((repo, int(request.match_info["run"])))
        if self.run_statuses:
            status, answer = self.run_statuses.pop(0)
        elif run is not None:
            status, answer = 200, run
        else:
            status, answer = 404, _RUN_NOT_FOUND
        self.run_lookups.append(
            Recorded(
                path=request.path,
                body={},
                headers=dict(request.headers),
                status=status,
                extra={"installation": self.tokens[token]},
            )
        )
        return web.json_response(answer, status=status)

    def reviews(self) -> list[Recorded]:
        """Answers with a `state` (approved / rejected) that GitHub accepted."""
        return [r for r in self.recorded if "state" in r.body and r.status == 204]

    def reports(self) -> list[Recorded]:
        """Status reports (no `state`)."""
        return [r for r in self.recorded if "state" not in r.body]
