"""The shape every pipeline adapter follows: verify + parse an inbound webhook into an
`InboundRequest`, and deliver a decision back (generic now; GitHub, GitLab, Jenkins later)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic_core import PydanticCustomError

from bot.domain.model import Delivery, RequestDetails, Requester, Risk
from bot.domain.text import control_character_message
from bot.ports import DeliveryResult

__all__ = [
    "FieldError",
    "Ignored",
    "InboundError",
    "InboundRequest",
    "InboundUpdate",
    "InvalidPayload",
    "PipelineAdapter",
    "ResolvesRequester",
    "SignatureError",
    "iso_utc",
    "refuse_control_characters",
]


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """What an adapter hands to the `open_request` use case: a verified, validated request to
    gate a deployment. Routing (service, rules, channel) is the use case's job."""

    source: str  # the adapter: generic | github | gitlab | jenkins
    delivery_id: str  # the provider's delivery id (webhook-id, X-GitHub-Delivery, …): dedupe key
    service: str | None  # as the pipeline named it; None when only `repository` was given
    repository: str | None  # matched against the services' repo globs when `service` is None
    environment: str
    risk: Risk | None  # the pipeline's own risk claim; None: the service's risk applies
    requester: Requester
    details: RequestDetails
    body_sha256: str  # hex digest of the raw body: same delivery id + other body → 409
    # Where and how to deliver the decision, adapter-specific and JSON-serialisable,
    # e.g. {"url": "https://ci.example.com/hook"}; empty when the pipeline polls instead.
    callback: dict[str, Any] = field(default_factory=dict)
    # The provider's own identity of the gated deployment (e.g. "30/15": GitLab project id /
    # deployment id), so that its later events find this request (`requests.find_by_external_ref`).
    external_ref: str | None = None


@dataclass(frozen=True, slots=True)
class InboundUpdate:
    """A provider-side change to a deployment Quorum may be gating (GitLab: someone approved it in
    GitLab, or the job was canceled). Applied by `bot.services.updates.apply_update`."""

    source: str
    delivery_id: str  # dedupe key, like InboundRequest.delivery_id
    external_ref: str
    status: str  # the provider's status word: approved, rejected, running, canceled, …
    actor: str | None  # who did it on the provider's side, as the provider names them
    detail: str  # one human-readable line for the card and the audit trail
    closes: bool  # the provider no longer waits for Quorum's decision on this deployment
    body_sha256: str


class InboundError(Exception):
    """Base of the errors an adapter raises for input it refuses."""


class SignatureError(InboundError):
    """The webhook is not authentic (missing, stale or wrong signature) → HTTP 401.

    `reason` is safe to log and to return to the caller: it never contains a secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending field: a dotted path such as `links[0].url` (`body` for the whole body)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidPayload(InboundError):
    """The body is authentic but malformed or violates the schema → HTTP 400 listing every field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


class Ignored(InboundError):
    """The webhook is authentic but opens no request (a ping, an event Quorum does not gate).

    The handler answers `status` (200 for a ping, 204 for an event Quorum does not gate) and logs
    `reason`; nothing is recorded."""

    def __init__(self, reason: str, status: int = 200) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def refuse_control_characters(value: Any) -> Any:
    """A `mode="before"` field validator for every inbound webhook body model, attached as
    `_text = field_validator("*", mode="before")(refuse_control_characters)` on the module's
    base model: no string field, at any depth, may hold a control character (NUL breaks
    PostgreSQL; the others garble cards and the audit trail). It runs before a field's own
    validators and before whitespace is stripped, so the error (400 naming the field, e.g.
    `links[0].text`) is the same whatever else the field allows."""
    if isinstance(value, str) and (problem := control_character_message(value)) is not None:
        raise PydanticCustomError("control_character", problem)
    return value


class PipelineAdapter(Protocol):
    """One provider: parse its inbound webhook, deliver the decision back through the outbox."""

    @property
    def source(self) -> str:
        """The adapter's name, also the `Delivery.target` it delivers: generic, github, …"""
        ...

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InboundRequest | InboundUpdate:
        """Verify the signature, then parse and validate the body.

        Synchronous and pure apart from the verifier's clock. Returns a request to open, or an
        update to a deployment already gated. Raises SignatureError (401), InvalidPayload (400)
        or Ignored (2xx, nothing to do)."""
        ...

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        """One delivery attempt. Never raises for a network or HTTP failure: the result says
        whether it worked and whether a retry could help."""
        ...


@runtime_checkable
class ResolvesRequester(Protocol):
    """An adapter whose webhook does not name the human requester by itself (GitHub: the
    deployment's creator may be `github-actions[bot]`): asked once more, after `parse`, before
    the request opens."""

    async def resolve_requester(self, inbound: InboundRequest) -> InboundRequest:
        """The request with its requester as the provider knows them. Bounded in time, and never
        raises for a network or HTTP failure: the requester `parse` set then stands."""
        ...


def iso_utc(value: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix and whole seconds, as every Quorum API shows times."""
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime; Quorum only handles timezone-aware UTC times")
        value = value.astimezone(UTC)
    return value.replace(microsecond=0, tzinfo=None).isoformat() + "Z"
