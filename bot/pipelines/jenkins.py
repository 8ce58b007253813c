"""The Jenkins notifier: a request that came through the generic webhook with
`jenkins.input_url` is decided by answering that `input` step (proceedEmpty / abort).

The credentials answer any input step, so they go only to input steps under JENKINS_URL
(settings refuse credentials without it; intake refuses an `input_url` outside it)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from bot.domain.model import ApprovalRequest, Delivery, RequestState, Vote
from bot.pipelines.egress import url_under
from bot.pipelines.outbound import Reply, failure, send
from bot.ports import DeliveryResult
from bot.settings import Settings

__all__ = ["JenkinsNotifier", "jenkins_root"]

TARGET: Final = "jenkins"
_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
_CRUMB_PATH: Final = "crumbIssuer/api/json"


def jenkins_root(input_url: str) -> str:
    """The Jenkins base URL of an input step URL: everything before the first `/job/`."""
    parts = urlsplit(input_url)
    path = parts.path
    index = path.find("/job/")
    base = path[:index] if index >= 0 else ""
    return f"{parts.scheme}://{parts.netloc}{base}/"


def _needs_crumb(reply: Reply) -> bool:
    return reply.status == 403 and "crumb" in reply.text.lower()


class JenkinsNotifier:
    """Answers an `input` step as JENKINS_USER with JENKINS_API_TOKEN (basic auth), fetching a
    CSRF crumb only when Jenkins asks for one (API-token requests are usually exempt)."""

    source: Final = TARGET

    def __init__(
        self,
        user: str,
        api_token: str,
        http: Callable[[], aiohttp.ClientSession],
        *,
        base_url: str,
        user_agent: str = "Quorum",
    ) -> None:
        if not base_url:
            raise ValueError("JenkinsNotifier needs JENKINS_URL")
        self._user = user
        # Credentials go only to input steps under `base_url` (JENKINS_URL), never to whatever
        # host a pipeline names.
        self._base_url = base_url.rstrip("/") + "/"
        credentials = base64.b64encode(f"{user}:{api_token}".encode()).decode()
        self.__authorization = f"Basic {credentials}"
        self._http = http
        self._user_agent = user_agent

    def __repr__(self) -> str:
        return f"JenkinsNotifier(user={self._user!r}, base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        """JENKINS_URL with a trailing slash: the only place the credentials go."""
        return self._base_url

    @classmethod
    def from_settings(
        cls, settings: Settings, http: Callable[[], aiohttp.ClientSession]
    ) -> JenkinsNotifier | None:
        if (
            not settings.jenkins_user
            or settings.jenkins_api_token is None
            or not settings.jenkins_url
        ):
            return None
        return cls(
            settings.jenkins_user,
            settings.jenkins_api_token.get_secret_value(),
            http,
            base_url=settings.jenkins_url,
        )

    def delivery_payload(self, request: ApprovalRequest, votes: Sequence[Vote]) -> dict[str, Any]:
        jenkins = request.callback.get("jenkins")
        if not isinstance(jenkins, Mapping) or not isinstance(jenkins.get("input_url"), str):
            raise ValueError(f"request {request.id} has no Jenkins input step")
        action = "proceedEmpty" if request.state is RequestState.APPROVED else "abort"
        return {
            "input_url": jenkins["input_url"],
            "action": action,
            "state": request.state.value,
            "reason": request.decision_reason,
        }

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        input_url = delivery.payload.get("input_url")
        action = delivery.payload.get("action")
        if not isinstance(input_url, str) or action not in ("proceedEmpty", "abort"):
            return DeliveryResult(ok=False, detail="delivery has no Jenkins target", permanent=True)
        url = input_url if input_url.endswith("/") else input_url + "/"
        if not url_under(url, self._base_url):
            return DeliveryResult(
                ok=False,
                detail=f"input_url is not under JENKINS_URL {self._base_url}; not sent",
                permanent=True,
            )
        headers = {"user-agent": self._user_agent}
        reply = await self._post(url + str(action), headers, None)
        if not isinstance(reply, DeliveryResult) and _needs_crumb(reply):
            crumb = await self._crumb(jenkins_root(url))
            if isinstance(crumb, DeliveryResult):
                return crumb
            field, value, cookies = crumb
            reply = await self._post(url + str(action), {**headers, field: value}, cookies)
        if isinstance(reply, DeliveryResult):
            return reply
        if 200 <= reply.status < 400:
            # Jenkins answers a form post with a redirect to the build: that is success.
            done = "proceeded" if action == "proceedEmpty" else "aborted"
            return DeliveryResult(ok=True, detail=f"Jenkins input {done} (HTTP {reply.status})")
        if reply.status == 404:
            return DeliveryResult(
                ok=False,
                detail="build is gone: Jenkins has no such input step (HTTP 404)",
                permanent=True,
            )
        return failure(reply, prefix="Jenkins ")

    async def _post(
        self, url: str, headers: Mapping[str, str], cookies: Mapping[str, str] | None
    ) -> Reply | DeliveryResult:
        return await send(
            self._http(),
            "POST",
            url,
            headers={**headers, "authorization": self.__authorization},
            client_timeout=_TIMEOUT,
            cookies=cookies,
        )

    async def _crumb(self, root: str) -> tuple[str, str, Mapping[str, str]] | DeliveryResult:
        reply = await send(
            self._http(),
            "GET",
            root + _CRUMB_PATH,
            headers={
                "user-agent": self._user_agent,
                "accept": "application/json",
                "authorization": self.__authorization,
            },
            client_timeout=_TIMEOUT,
        )
        if isinstance(reply, DeliveryResult):
            return reply
        if reply.status != 200:
            return failure(reply, prefix="Jenkins crumb issuer ")
        try:
            data = json.loads(reply.text)
            field, value = str(data["crumbRequestField"]), str(data["crumb"])
        except (ValueError, KeyError, TypeError):
            return DeliveryResult(ok=False, detail="Jenkins crumb issuer: unexpected answer")
        # The crumb is bound to the web session that fetched it: send its cookie back.
        return field, value, reply.cookies
