"""A fake GitLab REST API: `POST /api/v4/projects/:id/deployments/:deployment_id/approval`,
checking the PRIVATE-TOKEN and answering with queued statuses (e.g. GitLab's 4xx messages)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer, Recorded

API_TOKEN = "glpat-fake-quorum-bot"


class FakeGitLab(LoopbackServer):
    def __init__(self, token: str = API_TOKEN) -> None:
        super().__init__()
        self._token = token
        self.answers: list[tuple[int, dict[str, Any]]] = []  # queued (status, body)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(
            "/api/v4/projects/{project}/deployments/{deployment}/approval", self._approval
        )

    async def _approval(self, request: web.Request) -> web.Response:
        if request.headers.get("PRIVATE-TOKEN") != self._token:
            await self.refuse("bad PRIVATE-TOKEN")
            return web.json_response({"message": "401 Unauthorized"}, status=401)
        body = json.loads(await request.read())
        status, answer = self.answers.pop(0) if self.answers else (201, {})
        await self.record(
            Recorded(
                path=request.path,
                body=body,
                headers=dict(request.headers),
                status=status,
                extra={
                    "project": int(request.match_info["project"]),
                    "deployment": int(request.match_info["deployment"]),
                },
            )
        )
        if status == 201:
            answer = {"user": {"username": "quorum-bot"}, "status": body.get("status"), **answer}
        return web.json_response(answer, status=status)
