"""The GitHub adapter: a GitHub App's custom deployment protection rule (`POST /webhooks/github`),
answered by reviewing the deployment through its `deployment_callback_url`, with status reports
on the same endpoint while the request is pending. The requester is the human who triggered the
workflow run, read from GitHub's API before the request opens (`resolve_requester`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.domain.model import (
    ApprovalRequest,
    Delivery,
    Link,
    RequestDetails,
    Requester,
    RequestState,
    Vote,
    VoteKind,
)
from bot.pipelines.base import (
    FieldError,
    Ignored,
    InboundRequest,
    InvalidPayload,
    SignatureError,
    refuse_control_characters,
)
from bot.pipelines.github_auth import GitHubAppAuth, GitHubAuthError, github_headers
from bot.pipelines.hmac_tokens import HubSignatureVerifier, split_secrets
from bot.pipelines.outbound import Reply, failure, send
from bot.ports import DeliveryResult
from bot.settings import Settings

__all__ = [
    "COMMENT_LIMIT",
    "LOOKUP_TIMEOUT",
    "PROGRESS_BUDGET",
    "GitHubAdapter",
    "ProtectionRuleBody",
    "RunRef",
    "run_of",
]

log = logging.getLogger(__name__)

SOURCE: Final = "github"
EVENT: Final = "deployment_protection_rule"
COMMENT_LIMIT: Final = 1024  # GitHub's limit on a status report's comment
# GitHub keeps at most 10 status reports per deployment; one is kept in reserve so that a late
# report never crowds out anything that matters more.
PROGRESS_BUDGET: Final = 9
_MAX_LINKS: Final = 10
_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
# The run lookup happens while GitHub waits for the webhook's answer (10 s at most), so it is
# bounded as a whole, installation token included; past it the delivery's fallback stands.
LOOKUP_TIMEOUT: Final = 4.0
_MAX_RUN_BYTES: Final = 1 << 20  # a run is ~10 KB; anything far larger is not one


# --- Inbound body (only what Quorum reads; GitHub sends much more) ------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)
    _text = field_validator("*", mode="before")(refuse_control_characters)


class _User(_Body):
    login: Annotated[str, Field(min_length=1, max_length=100)]
    type: Annotated[str, Field(max_length=50)] | None = None  # User | Bot | Organization


class _Run(_Body):
    """`GET /repos/{owner}/{repo}/actions/runs/{run_id}`: who started the run. `actor` started its
    first attempt; `triggering_actor` started this one (a re-run may be someone else)."""

    id: int
    actor: _User | None = None
    triggering_actor: _User | None = None


class _Deployment(_Body):
    id: int
    sha: str | None = None
    ref: str | None = None
    creator: _User | None = None


class _PullRequest(_Body):
    number: int
    html_url: Annotated[str, Field(max_length=2048)]
    title: str | None = None


class _Repository(_Body):
    full_name: Annotated[str, Field(min_length=1, max_length=300)]
    html_url: str | None = None


class _Installation(_Body):
    id: int


class ProtectionRuleBody(_Body):
    """`deployment_protection_rule` (`action: requested`), the fields Quorum uses. Both the
    schema's shape and current deliveries (which add top-level `sha` and `ref`) are accepted."""

    action: str
    environment: Annotated[str, Field(min_length=1, max_length=100)]
    event: Annotated[str, Field(max_length=100)] | None = None
    deployment_callback_url: Annotated[str, Field(min_length=1, max_length=2048)]
    deployment: _Deployment | None = None
    pull_requests: list[_PullRequest] = []
    repository: _Repository
    sender: _User | None = None
    installation: _Installation
    sha: Annotated[str, Field(max_length=100)] | None = None
    ref: Annotated[str, Field(max_length=300)] | None = None


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def parse_body(body: bytes) -> ProtectionRuleBody:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidPayload([FieldError("body", "invalid JSON")]) from None
    if not isinstance(data, dict):
        raise InvalidPayload([FieldError("body", "must be a JSON object")])
    try:
        return ProtectionRuleBody.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(
            [
                FieldError(_path(e["loc"]), "is required" if e["type"] == "missing" else e["msg"])
                for e in exc.errors(include_url=False)
            ]
        ) from None


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _description(model: ProtectionRuleBody, ref: str | None) -> str:
    parts = [f"GitHub deployment protection rule for `{model.repository.full_name}`"]
    if model.event:
        parts.append(f"triggered by `{model.event}`")
    if ref:
        parts.append(f"on `{ref}`")
    return " ".join(parts) + "."


# --- Comments -----------------------------------------------------------------------------------


def _clip(text: str, limit: int = COMMENT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decision_comment(request: ApprovalRequest, votes: Sequence[Vote]) -> str:
    """Who decided in Slack and why, for the deployment's review comment."""
    reason = request.decision_reason or ""
    if request.state is RequestState.APPROVED:
        text = f"Approved in Slack through Quorum ({request.id}). {reason}".strip()
        reasons = [f"{v.clicked_by}: {v.reason}" for v in votes if v.reason]
        if reasons:
            text += " Notes: " + "; ".join(reasons)
    elif request.state is RequestState.REJECTED:
        rejecters = [v for v in votes if v.kind is VoteKind.REJECT]
        detail = "; ".join(
            f"{v.clicked_by}" + (f": {v.reason}" if v.reason else "") for v in rejecters
        )
        text = f"Rejected in Slack through Quorum ({request.id}) by {detail or reason}."
    elif request.state is RequestState.EXPIRED:
        text = (
            f"Rejected by Quorum: the approval request {request.id} expired without a decision"
            + (f" ({reason})" if reason else "")
            + "."
        )
    else:
        text = f"Rejected by Quorum: request {request.id} was {request.state.value}" + (
            f" ({reason})." if reason else "."
        )
    return _clip(text)


# --- Adapter ------------------------------------------------------------------------------------


class GitHubAdapter:
    """Verify + parse `deployment_protection_rule` deliveries; review the deployment back."""

    source: Final = SOURCE
    progress_budget: Final = PROGRESS_BUDGET

    def __init__(
        self,
        verifier: HubSignatureVerifier,
        auth: GitHubAppAuth,
        http: Callable[[], aiohttp.ClientSession],
        *,
        user_agent: str = "Quorum",
    ) -> None:
        self._verifier = verifier
        self._auth = auth
        self._http = http
        self._user_agent = user_agent

    def __repr__(self) -> str:
        return f"GitHubAdapter(verifier={self._verifier!r}, auth={self._auth!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], datetime],
    ) -> GitHubAdapter | None:
        """The adapter when GITHUB_WEBHOOK_SECRET, GITHUB_APP_ID and a private key are set."""
        secrets = split_secrets(settings.github_webhook_secret)
        key = _private_key(settings)
        if not secrets or not settings.github_app_id or key is None:
            return None
        auth = GitHubAppAuth(
            settings.github_app_id, key, api_url=settings.github_api_url, http=http, clock=clock
        )
        return cls(HubSignatureVerifier(secrets), auth, http)

    # --- inbound --------------------------------------------------------------------------

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
        lowered = _headers(headers)
        self._verifier.verify(body, lowered.get("x-hub-signature-256"))
        event = lowered.get("x-github-event", "").strip()
        if event == "ping":
            raise Ignored("ping", status=200)
        if event != EVENT:
            raise Ignored(f"event {event or '(none)'!r} is not gated by Quorum", status=204)
        delivery_id = lowered.get("x-github-delivery", "").strip()
        if not delivery_id or len(delivery_id) > 256 or not delivery_id.isprintable():
            raise SignatureError("missing or malformed header X-GitHub-Delivery")
        model = parse_body(body)
        if model.action != "requested":
            raise Ignored(f"action {model.action!r} is not gated by Quorum", status=204)
        if not self._on_api(model.deployment_callback_url):
            # The installation token goes to this URL: never to a host other than GitHub's API.
            raise InvalidPayload(
                [FieldError("deployment_callback_url", "is not on the configured GITHUB_API_URL")]
            )
        deployment = model.deployment
        sha = model.sha or (deployment.sha if deployment else None)
        ref = model.ref or (deployment.ref if deployment else None)
        creator = deployment.creator if deployment and deployment.creator else model.sender
        run = run_of(model.deployment_callback_url, self._auth.api_url, model.repository.full_name)
        links = [
            Link(text=f"#{pr.number} {pr.title or ''}".strip(), url=pr.html_url)
            for pr in model.pull_requests[:_MAX_LINKS]
        ]
        repo = model.repository
        external_ref = f"{repo.full_name}#{deployment.id}" if deployment else None
        return InboundRequest(
            source=SOURCE,
            # X-GitHub-Delivery is checked above but not signed: anyone replaying a signed body
            # can change it. The delivery is deduplicated by what it is about instead.
            delivery_id=about(model),
            service=None,
            repository=repo.full_name,
            environment=model.environment,
            risk=None,
            # Until `resolve_requester` reads the run: what stands if GitHub cannot be asked.
            requester=_fallback_requester(creator, run),
            details=RequestDetails(
                version=ref,
                sha=sha,
                title=f"{repo.full_name} → {model.environment}",
                description=_description(model, ref),
                links=tuple(links),
                event=model.event,
            ),
            callback={
                "github": {
                    "callback_url": model.deployment_callback_url,
                    "environment": model.environment,
                    "installation_id": model.installation.id,
                }
            },
            body_sha256=hashlib.sha256(body).hexdigest(),
            external_ref=external_ref,
        )

    def _on_api(self, url: str) -> bool:
        base = self._auth.api_url + "/"
        return url.startswith(base)

    # --- the requester --------------------------------------------------------------------

    async def resolve_requester(self, inbound: InboundRequest) -> InboundRequest:
        """The request with its requester set to who triggered the workflow run (its
        `triggering_actor`, else its `actor`), read with the installation token from
        GITHUB_API_URL only. A bot stays displayable but maps to nobody. When the run cannot be
        read (or names nobody), the requester `parse` set stands: the deployment's creator if a
        human, else unknown. Never raises for a network or HTTP failure; at most LOOKUP_TIMEOUT."""
        target = inbound.callback.get("github")
        if inbound.source != SOURCE or not isinstance(target, Mapping):
            return inbound
        url, installation = target.get("callback_url"), target.get("installation_id")
        if not isinstance(url, str) or not isinstance(installation, int):
            return inbound
        run = run_of(url, self._auth.api_url, inbound.repository or "")
        if run is None:
            # Not a run of this repository on GitHub's API: nothing to ask, nobody to trust.
            return replace(inbound, requester=Requester())
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                actor, problem = await self._run_actor(run, installation)
        except TimeoutError:
            actor, problem = None, f"timed out after {LOOKUP_TIMEOUT:g} s"
        if actor is None:
            log.warning(
                "workflow run %s of %s not read (%s); requester: %s",
                run.run_id,
                run.repository,
                problem or "it names no actor",
                inbound.requester.github or "unknown",
            )
            return inbound
        return replace(inbound, requester=_requester_of(actor))

    async def _run_actor(self, run: RunRef, installation: int) -> tuple[_User | None, str]:
        """Who triggered the run, or None and why not."""
        try:
            token = await self._auth.installation_token(installation)
        except GitHubAuthError as exc:
            return None, exc.detail
        url = f"{self._auth.api_url}/repos/{run.repository}/actions/runs/{run.run_id}"
        body = bytearray()
        try:
            async with self._http().get(
                url,
                headers=github_headers(token, self._user_agent),
                timeout=aiohttp.ClientTimeout(total=LOOKUP_TIMEOUT),
                allow_redirects=False,
            ) as response:
                status = response.status
                if status == 200:
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > _MAX_RUN_BYTES:
                            return None, "response too large"
        except TimeoutError:
            return None, f"timed out after {LOOKUP_TIMEOUT:g} s"
        except aiohttp.ClientError as exc:
            # The exception text may quote the URL: name the kind only.
            return None, f"network error: {type(exc).__name__}"
        if status == 401:
            self._auth.forget(installation)  # a cached token GitHub no longer accepts
        if status != 200:
            return None, f"HTTP {status}"
        try:
            found = _Run.model_validate_json(bytes(body))
        except ValidationError:
            return None, "not a workflow run"
        if found.id != run.run_id:
            return None, f"GitHub answered with run {found.id}"
        return found.triggering_actor or found.actor, ""

    # --- outbound -------------------------------------------------------------------------

    def delivery_payload(self, request: ApprovalRequest, votes: Sequence[Vote]) -> dict[str, Any]:
        target = _target(request)
        state = "approved" if request.state is RequestState.APPROVED else "rejected"
        return {
            **target,
            "body": {
                "environment_name": target["environment"],
                "state": state,
                "comment": decision_comment(request, votes),
            },
        }

    def progress_payload(self, request: ApprovalRequest, comment: str) -> dict[str, Any] | None:
        """A status report: the review endpoint with only `environment_name` and `comment`."""
        if "github" not in request.callback:
            return None
        target = _target(request)
        return {
            **target,
            "body": {"environment_name": target["environment"], "comment": _clip(comment)},
        }

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        payload = delivery.payload
        url = payload.get("callback_url")
        installation = payload.get("installation_id")
        body = payload.get("body")
        if not isinstance(url, str) or not isinstance(installation, int):
            return DeliveryResult(ok=False, detail="delivery has no GitHub target", permanent=True)
        if not isinstance(body, Mapping):
            return DeliveryResult(ok=False, detail="delivery has no body", permanent=True)
        if not self._on_api(url):
            return DeliveryResult(
                ok=False, detail="callback URL is not on GITHUB_API_URL", permanent=True
            )
        try:
            token = await self._auth.installation_token(installation)
        except GitHubAuthError as exc:
            return DeliveryResult(ok=False, detail=exc.detail, permanent=exc.permanent)
        headers = github_headers(token, self._user_agent)
        headers["content-type"] = "application/json"
        reply = await send(
            self._http(),
            "POST",
            url,
            headers=headers,
            body=json.dumps(body, ensure_ascii=False).encode(),
            client_timeout=_TIMEOUT,
        )
        if isinstance(reply, DeliveryResult):
            return reply
        return self._result(reply, installation, delivery.kind)

    def _result(self, reply: Reply, installation: int, kind: str) -> DeliveryResult:
        if 200 <= reply.status < 300:
            what = "status report posted" if kind == "progress" else "deployment reviewed"
            return DeliveryResult(ok=True, detail=f"{what} (HTTP {reply.status})")
        if reply.status == 401:
            # A cached token GitHub no longer accepts: mint a new one on the retry.
            self._auth.forget(installation)
            return DeliveryResult(ok=False, detail="HTTP 401: installation token refused")
        return failure(reply)


# --- Who requested it ---------------------------------------------------------------------------

# `{api}/repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule` (GitHub's docs for
# the deployment_protection_rule event). Names are GitHub's characters only, never `.`/`..`.
_NAME = r"[A-Za-z0-9._-]{1,100}"
_CALLBACK_PATH = re.compile(
    rf"repos/({_NAME})/({_NAME})/actions/runs/([0-9]{{1,19}})/deployment_protection_rule"
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RunRef:
    """The workflow run a protection-rule delivery is for."""

    repository: str  # owner/name as the callback URL spells it
    run_id: int


def about(model: ProtectionRuleBody) -> str:
    """The dedupe key of a protection-rule delivery: what it asks about (the repository, the run
    its callback URL names, the environment, the deployment), all of it signed. GitHub asks once
    per run attempt and environment, each attempt with a new deployment, so a second delivery
    with this key is a replay or a redelivery, whatever its X-GitHub-Delivery header says."""
    deployment = model.deployment.id if model.deployment else None
    repository, callback = model.repository.full_name, model.deployment_callback_url
    what = [repository, callback, model.environment, deployment]
    digest = hashlib.sha256(json.dumps(what, separators=(",", ":")).encode()).hexdigest()
    return f"about:{digest}"


def run_of(callback_url: str, api_url: str, repository: str) -> RunRef | None:
    """The run named by `deployment_callback_url`, only when that URL is on `api_url` (same scheme,
    host, port and path prefix, no credentials, query or fragment) and names `repository`, the
    delivery's own; None otherwise, so that no lookup ever goes where a payload says."""
    try:
        url, api = urlsplit(callback_url), urlsplit(api_url.rstrip("/"))
        url_port = url.port or _DEFAULT_PORTS.get(url.scheme.lower())
        api_port = api.port or _DEFAULT_PORTS.get(api.scheme.lower())
    except ValueError:  # a malformed port
        return None
    if (
        url.scheme.lower() != api.scheme.lower()
        or url.hostname is None
        or url.hostname != api.hostname
        or url_port != api_port
        or url.username is not None
        or url.password is not None
        or url.query
        or url.fragment
    ):
        return None
    prefix = api.path + "/"
    if not url.path.startswith(prefix):
        return None
    match = _CALLBACK_PATH.fullmatch(url.path[len(prefix) :])
    if match is None:
        return None
    owner, name, run_id = match.groups()
    if {owner, name} & {".", ".."} or f"{owner}/{name}".lower() != repository.lower():
        return None
    return RunRef(repository=f"{owner}/{name}", run_id=int(run_id))


def _is_bot(user: _User) -> bool:
    return user.login.lower().endswith("[bot]") or (user.type or "").lower() == "bot"


def _requester_of(user: _User) -> Requester:
    """A human's login, mapped through `identities.github`; a bot's keeps (or gets) the `[bot]`
    suffix GitHub gives App accounts, which `identities.github` never maps to anyone."""
    if not _is_bot(user):
        return Requester(github=user.login)
    login = user.login if user.login.lower().endswith("[bot]") else f"{user.login}[bot]"
    return Requester(github=login)


def _fallback_requester(creator: _User | None, run: RunRef | None) -> Requester:
    """The requester when the run cannot be read: the deployment's creator if a human (usually
    who triggered the run), else unknown: a `github-actions[bot]` that created the deployment is
    not who asked for it, and a callback URL that names no run of this repository is not trusted
    to say who did."""
    if run is None or creator is None or _is_bot(creator):
        return Requester()
    return Requester(github=creator.login)


def _target(request: ApprovalRequest) -> dict[str, Any]:
    github = request.callback.get("github")
    if not isinstance(github, Mapping):
        raise ValueError(f"request {request.id} was not opened by GitHub")
    return {
        "callback_url": github["callback_url"],
        "installation_id": github["installation_id"],
        "environment": github["environment"],
    }


def _private_key(settings: Settings) -> str | None:
    if settings.github_private_key is not None:
        # Environments often carry a PEM with its newlines escaped.
        return settings.github_private_key.get_secret_value().replace("\\n", "\n")
    if settings.github_private_key_file is not None:
        return Path(settings.github_private_key_file).read_text(encoding="utf-8")
    return None
