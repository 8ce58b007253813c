"""The generic pipeline adapter: any CI that can send a Standard Webhooks-signed JSON body
(`POST /webhooks/generic`), and the signed `approval.decided` callback Quorum sends back."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from bot.domain.model import (
    ApprovalRequest,
    Delivery,
    Link,
    RequestDetails,
    Requester,
    Risk,
    Vote,
)
from bot.domain.text import control_character, is_blank
from bot.pipelines.base import (
    FieldError,
    InboundRequest,
    InvalidPayload,
    iso_utc,
    refuse_control_characters,
)
from bot.pipelines.egress import EgressPolicy, UrlRefused, url_under
from bot.pipelines.outbound import NOT_RETRIED, callback_result, connect_failure
from bot.pipelines.signing import StandardWebhookVerifier, WebhookSigner
from bot.ports import DeliveryResult

__all__ = [
    "DECISIONS",
    "GenericAdapter",
    "GenericWebhookBody",
    "decision_payload",
]

SOURCE: Final = "generic"
DECISIONS: Final = frozenset({"approved", "rejected", "expired"})
CALLBACK_TIMEOUT_SECONDS: Final = 10.0
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


# --- Inbound body -------------------------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    # Pipelines template optional fields from variables that are often empty: "" means absent,
    # and so does text with nothing visible ("\u200b"). A control character is refused instead
    # (refuse_control_characters), even where it is all there is.
    if isinstance(value, str) and control_character(value) is None and is_blank(value):
        return None
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace")
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address")
    return value


# Optional strings of a bounded length: blank means absent; surrounding whitespace is dropped
# (model config). The bound sits on `str` itself since pydantic cannot measure None.
Text100 = Annotated[Annotated[str, Field(max_length=100)] | None, BeforeValidator(_blank_to_none)]
Text200 = Annotated[Annotated[str, Field(max_length=200)] | None, BeforeValidator(_blank_to_none)]
Text300 = Annotated[Annotated[str, Field(max_length=300)] | None, BeforeValidator(_blank_to_none)]
LongText = Annotated[
    Annotated[str, Field(max_length=20_000)] | None, BeforeValidator(_blank_to_none)
]
Email = Annotated[
    Annotated[str, Field(max_length=320), AfterValidator(_email)] | None,
    BeforeValidator(_blank_to_none),
]
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]


class _Body(BaseModel):
    # Unknown keys are ignored so that pipelines can send more than Quorum reads.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)
    _text = field_validator("*", mode="before")(refuse_control_characters)


class RequestedBy(_Body):
    email: Email = None
    github: Text100 = None
    slack: Text100 = None  # a Slack user id (U…) or handle


class LinkBody(_Body):
    url: HttpUrl
    text: Text200 = None  # shown as the link's label; the URL when absent


class JenkinsBody(_Body):
    input_url: HttpUrl  # …/job/<name>/<build>/input/<Id>/ (issue 6's Jenkins adapter)


class GenericWebhookBody(_Body):
    """`POST /webhooks/generic` body; docs/openapi.yaml `GenericWebhookRequest` mirrors it."""

    service: Text200 = None
    repository: Text300 = None
    environment: Annotated[str, Field(min_length=1, max_length=100)]
    version: Text200 = None
    sha: Text100 = None
    title: Text300 = None
    description: LongText = None
    requested_by: RequestedBy | None = None
    links: Annotated[list[LinkBody], Field(max_length=20)] = []
    change_ticket: Text200 = None
    risk: Literal["low", "medium", "high"] | None = None
    callback_url: Annotated[HttpUrl | None, BeforeValidator(_blank_to_none)] = None
    jenkins: JenkinsBody | None = None


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "body"


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "is required"
    message = str(error["msg"])
    # Our own validators' messages read better without pydantic's prefix.
    return message.removeprefix("Value error, ")


def parse_body(body: bytes) -> GenericWebhookBody:
    """Parse and validate a generic webhook body, listing every offending field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload([FieldError("body", "must be UTF-8")]) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        detail = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise InvalidPayload([FieldError("body", detail)]) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload([FieldError("body", f"invalid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise InvalidPayload([FieldError("body", "must be a JSON object")])

    errors: list[FieldError] = []
    model: GenericWebhookBody | None = None
    try:
        model = GenericWebhookBody.model_validate(data)
    except ValidationError as exc:
        errors.extend(
            FieldError(_path(e["loc"]), _message(e)) for e in exc.errors(include_url=False)
        )
    # Checked on the raw data so that it is reported together with the fields' own errors.
    if all(_blank_to_none(data.get(key)) is None for key in ("service", "repository")):
        errors.append(FieldError("service", "service or repository is required"))
    if errors or model is None:
        raise InvalidPayload(errors)
    return model


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --- Decision callback --------------------------------------------------------------------------


def decision_payload(
    request: ApprovalRequest,
    votes: Sequence[Vote],
    decision: str,
    reason: str | None,
    decided_at: datetime,
) -> dict[str, Any]:
    """The `approval.decided` callback body (docs/openapi.yaml `ApprovalDecided`).

    `user` is who clicked; `on_behalf_of` is the delegator when the vote was delegated."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {sorted(DECISIONS)}, not {decision!r}")
    return {
        "type": "approval.decided",
        "request_id": request.id,
        "decision": str(decision),
        "reason": reason,
        "votes": [_vote_entry(vote) for vote in votes],
        "decided_at": iso_utc(decided_at),
        "break_glass": request.break_glass,
    }


def _vote_entry(vote: Vote) -> dict[str, Any]:
    clicked_by = vote.actor or vote.voter
    return {
        "user": clicked_by,
        "vote": str(vote.kind),
        "reason": vote.reason,
        "at": iso_utc(vote.cast_at),
        "on_behalf_of": vote.voter if clicked_by != vote.voter else None,
    }


# --- Adapter ------------------------------------------------------------------------------------

SessionProvider = aiohttp.ClientSession | Callable[[], aiohttp.ClientSession]


class GenericAdapter:
    """Verify + parse `POST /webhooks/generic`; deliver `approval.decided` to `callback_url`.

    `http` is a ClientSession, or a callable returning the one to use (so the adapter can be
    built before the event loop runs); the caller owns and closes it. Without a `signer` (no
    callback key or secret configured) callbacks fail permanently rather than go out unsigned."""

    source: Final = SOURCE

    def __init__(
        self,
        verifier: StandardWebhookVerifier,
        signer: WebhookSigner | None,
        http: SessionProvider,
        clock: Callable[[], datetime],
        *,
        timeout: float = CALLBACK_TIMEOUT_SECONDS,
        user_agent: str = "Quorum",
        egress: EgressPolicy | None = None,
        jenkins_url: str | None = None,
    ) -> None:
        self._verifier = verifier
        self._signer = signer
        self._http = http
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._user_agent = user_agent
        # Where webhook-named URLs may go (QUORUM_EGRESS_ALLOW); `http` must be a session whose
        # resolver applies the same policy at connect time (bot/pipelines/egress.py).
        self._egress = egress or EgressPolicy()
        self._jenkins_url = jenkins_url.rstrip("/") + "/" if jenkins_url else None

    def __repr__(self) -> str:
        return f"GenericAdapter(verifier={self._verifier!r}, signer={self._signer!r})"

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
        webhook_id = self._verifier.verify(body, headers)
        model = parse_body(body)
        self._check_urls(model)
        who = model.requested_by or RequestedBy()
        callback: dict[str, Any] = {}
        if model.callback_url is not None:
            callback["url"] = model.callback_url
        if model.jenkins is not None:
            callback["jenkins"] = {"input_url": model.jenkins.input_url}
        return InboundRequest(
            source=SOURCE,
            delivery_id=webhook_id,
            service=model.service,
            repository=model.repository,
            environment=model.environment,
            risk=Risk(model.risk) if model.risk is not None else None,
            requester=Requester(email=who.email, github=who.github, slack=who.slack),
            details=RequestDetails(
                version=model.version,
                sha=model.sha,
                title=model.title,
                description=model.description,
                change_ticket=model.change_ticket,
                links=tuple(Link(text=link.text or link.url, url=link.url) for link in model.links),
            ),
            callback=callback,
            body_sha256=hashlib.sha256(body).hexdigest(),
        )

    def delivery_payload(self, request: ApprovalRequest, votes: Sequence[Vote]) -> dict[str, Any]:
        """The outbox payload for the decided `request`: where to POST and the body to POST.

        Built once, in the decision's transaction, so every retry sends the same body."""
        if request.decided_at is None:
            raise ValueError(f"request {request.id} is not decided")
        return {
            "url": request.callback.get("url"),
            "body": decision_payload(
                request, votes, request.state, request.decision_reason, request.decided_at
            ),
        }

    def _check_urls(self, model: GenericWebhookBody) -> None:
        """The URLs Quorum would call, against the egress policy and JENKINS_URL → 422."""
        refused: list[FieldError] = []
        if model.callback_url is not None and (
            reason := self._egress.url_refusal(model.callback_url)
        ):
            refused.append(FieldError("callback_url", reason))
        if model.jenkins is not None:
            input_url = model.jenkins.input_url
            if self._jenkins_url is not None and not url_under(input_url, self._jenkins_url):
                refused.append(
                    FieldError(
                        "jenkins.input_url",
                        f"is not under JENKINS_URL ({self._jenkins_url}); Quorum only answers "
                        "input steps of the configured Jenkins",
                    )
                )
            elif self._jenkins_url is None and (reason := self._egress.url_refusal(input_url)):
                refused.append(FieldError("jenkins.input_url", reason))
        if refused:
            raise UrlRefused(refused)

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        url = delivery.payload.get("url")
        if not url:  # queued by a version that also queued deliveries for polled requests
            return DeliveryResult(ok=True, detail="no callback_url; pipeline polls")
        document = delivery.payload.get("body")
        if not isinstance(document, Mapping):
            # A bug on our side, not the pipeline's: retrying would not fix it.
            return DeliveryResult(ok=False, detail="delivery has no body", permanent=True)
        if self._signer is None:
            return DeliveryResult(
                ok=False, detail="no callback signing key or secret configured", permanent=True
            )
        # Checked again: QUORUM_EGRESS_ALLOW may have changed since intake, and an address
        # literal never reaches the resolver that checks names at connect time.
        if reason := self._egress.url_refusal(str(url)):
            return DeliveryResult(
                ok=False, detail=f"callback_url {reason} ({NOT_RETRIED})", permanent=True
            )
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        # delivery.id is the webhook-id: every retry carries the same one, so the pipeline
        # can drop duplicates; the timestamp is fresh so that the retry is not stale.
        headers = self._signer.sign(delivery.id, self._clock(), body)
        headers["content-type"] = "application/json"
        headers["user-agent"] = self._user_agent
        session = self._http if isinstance(self._http, aiohttp.ClientSession) else self._http()
        try:
            async with session.post(
                str(url), data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                # Never read: a receiver's answer is its status code (see callback_result).
                return callback_result(response.status)
        except TimeoutError:
            return DeliveryResult(ok=False, detail=f"timed out after {self._timeout.total:g} s")
        except aiohttp.InvalidURL:
            return DeliveryResult(ok=False, detail="invalid callback URL", permanent=True)
        except aiohttp.ClientConnectorError as exc:
            return connect_failure(exc)
        except aiohttp.ClientError as exc:
            # The exception text may quote the URL, which can carry a token: name the kind only.
            return DeliveryResult(ok=False, detail=f"network error: {type(exc).__name__}")
