"""The GitLab adapter: Deployment Hooks (`POST /webhooks/gitlab`) open a request for a deployment
blocked on a protected environment and update it on later events; the decision goes back through
the deployment approvals API."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final

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
    InboundUpdate,
    InvalidPayload,
    refuse_control_characters,
)
from bot.pipelines.hmac_tokens import TokenVerifier, split_secrets
from bot.pipelines.outbound import failure, send
from bot.pipelines.signing import StandardWebhookVerifier
from bot.ports import DeliveryResult
from bot.settings import Settings

__all__ = ["UPDATE_STATUSES", "DeploymentEvent", "GitLabAdapter", "external_ref"]

SOURCE: Final = "gitlab"
HOOK: Final = "Deployment Hook"
OPENS: Final = "blocked"
# Statuses after which GitLab no longer waits for an approval: the request closes if still open.
# (`running`/`success` while Quorum is still pending mean someone let it through in GitLab.)
UPDATE_STATUSES: Final = frozenset(
    {"approved", "rejected", "running", "success", "failed", "canceled"}
)
COMMENT_LIMIT: Final = 1000
_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)
    _text = field_validator("*", mode="before")(refuse_control_characters)


class _Project(_Body):
    id: int
    path_with_namespace: Annotated[str, Field(min_length=1, max_length=300)]
    web_url: str | None = None


class _User(_Body):
    username: str | None = None
    name: str | None = None
    email: str | None = None


class DeploymentEvent(_Body):
    """A `Deployment Hook` body: the fields Quorum reads (GitLab webhook_events.md)."""

    object_kind: str
    status: Annotated[str, Field(min_length=1, max_length=50)]
    deployment_id: int
    deployable_id: int | None = None
    deployable_url: str | None = None
    environment: Annotated[str, Field(min_length=1, max_length=100)]
    project: _Project
    short_sha: str | None = None
    user: _User | None = None
    commit_url: str | None = None
    commit_title: str | None = None


def external_ref(project_id: int, deployment_id: int) -> str:
    return f"{project_id}/{deployment_id}"


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def parse_body(body: bytes) -> DeploymentEvent:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidPayload([FieldError("body", "invalid JSON")]) from None
    if not isinstance(data, dict):
        raise InvalidPayload([FieldError("body", "must be a JSON object")])
    try:
        return DeploymentEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(
            [
                FieldError(_path(e["loc"]), "is required" if e["type"] == "missing" else e["msg"])
                for e in exc.errors(include_url=False)
            ]
        ) from None


def _http(url: str | None) -> str | None:
    return url if url and url.startswith(("http://", "https://")) else None


# Accounts GitLab creates for automation, by their generated usernames: project and group access
# tokens' bot users (`project_{id}_bot_{random}`, `group_{id}_bot_{random}`; older versions
# `project_{id}_bot` and `project_{id}_bot{n}`) and service accounts (`service_account_…`).
# GitLab: administration/internal_users.md, user/profile/service_accounts.md.
_BOT_USERNAME = re.compile(
    r"(?:project|group)_\d+_bot\w*|service_account_\w+", re.IGNORECASE | re.ASCII
)
# Their generated addresses: `project{id}_bot…@noreply.{host}` (and the `_`-separated forms).
_BOT_EMAIL = re.compile(
    r"(?:project|group)_?\d+_bot\w*@noreply\..+|service_account_\w+@noreply\..+",
    re.IGNORECASE | re.ASCII,
)


def _is_bot(user: _User) -> bool:
    """A project/group access token's bot user or a service account, as GitLab names them: no
    person, so nobody a request can be attributed to (a service account given a chosen username
    is not recognised; keep such names out of `identities.gitlab`)."""
    return bool(
        (user.username and _BOT_USERNAME.fullmatch(user.username))
        or (user.email and _BOT_EMAIL.fullmatch(user.email))
    )


def _email(value: str | None) -> str | None:
    # GitLab sends "[REDACTED]" instead of an address the user has not made public.
    return value if value and "@" in value and " " not in value else None


def _requester_of(user: _User | None) -> Requester:
    """The requester: the GitLab username (mapped through `identities.gitlab`) and the email
    (`identities.email` / Slack lookup). A bot user is nobody: no field that could map is set,
    and the card's description names the account instead."""
    if user is None or _is_bot(user):
        return Requester()
    return Requester(gitlab=user.username or None, email=_email(user.email))


def _actor(user: _User | None) -> str | None:
    if user is None:
        return None
    return user.username or user.name or user.email


# --- Comments -----------------------------------------------------------------------------------


def decision_comment(request: ApprovalRequest, votes: Sequence[Vote]) -> str:
    """Who decided in Slack and their reasons, for GitLab's approval comment."""
    reason = request.decision_reason or ""
    if request.state is RequestState.APPROVED:
        text = f"Approved in Slack through Quorum ({request.id}): {reason}"
        notes = [f"{v.clicked_by}: {v.reason}" for v in votes if v.reason]
        if notes:
            text += ". Notes: " + "; ".join(notes)
    elif request.state is RequestState.REJECTED:
        rejecters = [
            v.clicked_by + (f": {v.reason}" if v.reason else "")
            for v in votes
            if v.kind is VoteKind.REJECT
        ]
        text = (
            f"Rejected in Slack through Quorum ({request.id}) by {'; '.join(rejecters) or reason}"
        )
    elif request.state is RequestState.EXPIRED:
        text = f"Rejected by Quorum: request {request.id} expired without a decision" + (
            f" ({reason})" if reason else ""
        )
    else:
        text = f"Rejected by Quorum: request {request.id} was {request.state.value}"
    return text if len(text) <= COMMENT_LIMIT else text[: COMMENT_LIMIT - 1] + "…"


# --- Adapter ------------------------------------------------------------------------------------


class GitLabAdapter:
    """Verify + parse Deployment Hooks; approve or reject the deployment through GitLab's API.

    `represented_as` maps a Quorum rule name to the GitLab group (or role) the bot's approval
    should count for, when the bot user belongs to several approval rules."""

    source: Final = SOURCE

    def __init__(
        self,
        verifier: TokenVerifier | None,
        http: Callable[[], aiohttp.ClientSession],
        *,
        signature: StandardWebhookVerifier | None = None,
        gitlab_url: str | None,
        api_token: str | None,
        represented_as: Mapping[str, str] | None = None,
        user_agent: str = "Quorum",
    ) -> None:
        if verifier is None and signature is None:
            raise ValueError("GitLab webhooks need a token or a signing secret to be verified")
        self._verifier = verifier
        self._signature = signature
        self._http = http
        self._gitlab_url = gitlab_url.rstrip("/") if gitlab_url else None
        self.__api_token = api_token
        self._represented_as = dict(represented_as or {})
        self._user_agent = user_agent

    def __repr__(self) -> str:
        return (
            f"GitLabAdapter(verifier={self._verifier!r}, signature={self._signature!r}, "
            f"gitlab_url={self._gitlab_url!r})"
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: Callable[[], aiohttp.ClientSession],
        represented_as: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> GitLabAdapter | None:
        """The adapter when GITLAB_WEBHOOK_TOKEN or GITLAB_WEBHOOK_SIGNING_SECRET is set
        (decisions also need GITLAB_URL and GITLAB_TOKEN; without them each delivery fails
        visibly on the card)."""
        tokens = split_secrets(settings.gitlab_webhook_token)
        signing = split_secrets(settings.gitlab_webhook_signing_secret)
        if not tokens and not signing:
            return None
        api_token = settings.gitlab_token.get_secret_value() if settings.gitlab_token else None
        return cls(
            TokenVerifier(tokens, header="X-Gitlab-Token") if tokens else None,
            http,
            signature=StandardWebhookVerifier(signing, clock=clock) if signing else None,
            gitlab_url=settings.gitlab_url,
            api_token=api_token,
            represented_as=represented_as,
        )

    # --- inbound --------------------------------------------------------------------------

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundRequest | InboundUpdate:
        lowered = {key.lower(): value for key, value in headers.items()}
        # GitLab signs with the Standard Webhooks scheme when a signing token is configured;
        # the older shared X-Gitlab-Token is checked when it is configured. Both may be.
        if self._signature is not None:
            self._signature.verify(body, lowered)
        if self._verifier is not None:
            self._verifier.verify(lowered.get("x-gitlab-token"))
        hook = lowered.get("x-gitlab-event", "").strip()
        if hook != HOOK:
            raise Ignored(f"{hook or 'an event without X-Gitlab-Event'} is not gated", status=204)
        digest = hashlib.sha256(body).hexdigest()
        event = parse_body(body)
        if event.object_kind != "deployment":
            raise Ignored(f"object_kind {event.object_kind!r} is not gated", status=204)
        ref = external_ref(event.project.id, event.deployment_id)
        status = event.status.lower()
        # Deduplicated by what the delivery is about, not by Idempotency-Key, webhook-id or
        # X-Gitlab-Event-UUID: a replayed body may carry any of those (only webhook-id is signed,
        # and only with a signing token). A deployment reaches each status once.
        delivery_id = f"{ref}:{status}"[:256]
        if status == OPENS:
            return self._request(event, delivery_id, digest, ref)
        if status in UPDATE_STATUSES:
            actor = _actor(event.user)
            return InboundUpdate(
                source=SOURCE,
                delivery_id=delivery_id,
                external_ref=ref,
                status=status,
                actor=actor,
                detail=f"GitLab: deployment {status}" + (f" by {actor}" if actor else ""),
                closes=True,
                body_sha256=digest,
            )
        raise Ignored(f"deployment status {status!r} needs no action", status=204)

    def _request(
        self, event: DeploymentEvent, delivery_id: str, digest: str, ref: str
    ) -> InboundRequest:
        links: list[Link] = []
        if url := _http(event.deployable_url):
            links.append(Link(text=f"Job #{event.deployable_id or ''}".strip(" #"), url=url))
        if url := _http(event.commit_url):
            links.append(Link(text=f"Commit {event.short_sha or ''}".strip(), url=url))
        user = event.user or _User()
        project = event.project.path_with_namespace
        by = _actor(user)
        if by and _is_bot(user):
            by += ", a GitLab bot user: the person behind it is unknown"
        return InboundRequest(
            source=SOURCE,
            delivery_id=delivery_id,
            service=None,
            repository=project,
            environment=event.environment,
            risk=None,
            requester=_requester_of(event.user),
            details=RequestDetails(
                sha=event.short_sha,
                title=event.commit_title,
                description=(
                    f"GitLab deployment #{event.deployment_id} of `{project}` waits for approval"
                    + (f" (requested by {by})." if by else ".")
                ),
                links=tuple(links),
                event="deployment",
            ),
            callback={
                "gitlab": {"project_id": event.project.id, "deployment_id": event.deployment_id}
            },
            body_sha256=digest,
            external_ref=ref,
        )

    # --- outbound -------------------------------------------------------------------------

    def delivery_payload(self, request: ApprovalRequest, votes: Sequence[Vote]) -> dict[str, Any]:
        gitlab = request.callback.get("gitlab")
        if not isinstance(gitlab, Mapping):
            raise ValueError(f"request {request.id} was not opened by GitLab")
        body: dict[str, Any] = {
            "status": "approved" if request.state is RequestState.APPROVED else "rejected",
            "comment": decision_comment(request, votes),
        }
        group = next(
            (self._represented_as[r.name] for r in request.rules if r.name in self._represented_as),
            None,
        )
        if group is not None:
            body["represented_as"] = group
        return {
            "project_id": gitlab["project_id"],
            "deployment_id": gitlab["deployment_id"],
            "body": body,
        }

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        payload = delivery.payload
        project, deployment = payload.get("project_id"), payload.get("deployment_id")
        body = payload.get("body")
        if not isinstance(project, int) or not isinstance(deployment, int):
            return DeliveryResult(ok=False, detail="delivery has no GitLab target", permanent=True)
        if not isinstance(body, Mapping):
            return DeliveryResult(ok=False, detail="delivery has no body", permanent=True)
        if not self._gitlab_url or not self.__api_token:
            return DeliveryResult(
                ok=False, detail="GITLAB_URL and GITLAB_TOKEN are not configured", permanent=True
            )
        # Built from GITLAB_URL and numeric ids only: no URL a hook names (project.web_url, job
        # and commit links) is ever contacted, least of all with GITLAB_TOKEN.
        url = f"{self._gitlab_url}/api/v4/projects/{project}/deployments/{deployment}/approval"
        reply = await send(
            self._http(),
            "POST",
            url,
            headers={
                "private-token": self.__api_token,
                "content-type": "application/json",
                "user-agent": self._user_agent,
            },
            body=json.dumps(body, ensure_ascii=False).encode(),
            client_timeout=_TIMEOUT,
        )
        if isinstance(reply, DeliveryResult):
            return reply
        if 200 <= reply.status < 300:
            return DeliveryResult(ok=True, detail=f"deployment {body.get('status')} in GitLab")
        return failure(reply, prefix="GitLab ")
