"""A fake Jenkins controller: pending `input` steps answered with `proceedEmpty` / `abort` under
basic auth, a crumb issuer whose crumb is bound to a session cookie (required when
`require_crumb` is set), and 404 for builds that are gone."""

from __future__ import annotations

import base64
import secrets

from aiohttp import web

from tests.fakes.loopback import LoopbackServer, Recorded

USER = "quorum-bot"
API_TOKEN = "11aa22bb33cc44dd55ee66ff77aa88bb99"
CRUMB_FIELD = "Jenkins-Crumb"


class FakeJenkins(LoopbackServer):
    def __init__(self, *, require_crumb: bool = False) -> None:
        super().__init__()
        self.require_crumb = require_crumb
        self.inputs: set[tuple[str, str, str]] = set()  # pending (job, build, input id)
        self.crumbs: dict[str, str] = {}  # session cookie → crumb
        self.crumb_requests = 0

    def add_input(self, job: str = "storefront-deploy", build: str = "42", step: str = "Q") -> str:
        self.inputs.add((job, build, step))
        return f"{self.base_url}/job/{job}/{build}/input/{step}/"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/crumbIssuer/api/json", self._crumb)
        app.router.add_post("/job/{job}/{build}/input/{step}/{action}", self._answer)

    def _authorised(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{USER}:{API_TOKEN}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _crumb(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            await self.refuse("crumb issuer: bad credentials")
            return web.Response(status=401)
        self.crumb_requests += 1
        session, crumb = secrets.token_hex(8), secrets.token_hex(16)
        self.crumbs[session] = crumb
        response = web.json_response(
            {
                "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                "crumb": crumb,
                "crumbRequestField": CRUMB_FIELD,
            }
        )
        response.set_cookie("JSESSIONID.fake", session)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            await self.refuse("input: bad credentials")
            return web.Response(status=401)
        if self.require_crumb:
            session = request.cookies.get("JSESSIONID.fake", "")
            if not session or self.crumbs.get(session) != request.headers.get(CRUMB_FIELD):
                await self.refuse("no valid crumb")
                return web.Response(
                    status=403,
                    text="HTTP ERROR 403 No valid crumb was included in the request",
                )
        key = (request.match_info["job"], request.match_info["build"], request.match_info["step"])
        action = request.match_info["action"]
        if key not in self.inputs or action not in ("proceedEmpty", "abort"):
            await self.record(Recorded(path=request.path, body={}, headers={}, status=404))
            return web.Response(status=404, text="Not Found")
        self.inputs.discard(key)
        await self.record(
            Recorded(
                path=request.path,
                body={},
                headers=dict(request.headers),
                status=302,
                extra={"action": action},
            )
        )
        # Jenkins answers a form post with a redirect to the build page.
        raise web.HTTPFound(f"/job/{key[0]}/{key[1]}/")
