"""The generic adapter's intake (verify + parse), its callback body, and docs/openapi.yaml."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bot.domain.model import (
    ApprovalRequest,
    Link,
    RejectMode,
    RequestDetails,
    Requester,
    RequestState,
    Risk,
    Rule,
    Vote,
    VoteKind,
)
from bot.pipelines.base import (
    FieldError,
    InvalidPayload,
    PipelineAdapter,
    SignatureError,
    iso_utc,
)
from bot.pipelines.generic import GenericAdapter, decision_payload, parse_body
from bot.pipelines.signing import StandardWebhookSigner, StandardWebhookVerifier
from bot.ports import PipelineNotifier

NOW = datetime(2025, 3, 4, 10, 12, 55, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
OPENAPI_URI = "urn:quorum:openapi"

FULL_BODY: dict[str, Any] = {
    "service": "payments-api",
    "environment": "production",
    "version": "v2.14.0",
    "sha": "3f786850e387550fdab836ed7e6dc881de23001b",
    "title": "Release 2.14",
    "description": "Moves card tokenisation to the new vault.",
    "requested_by": {"email": "ana@example.com", "github": "ana-dev", "slack": "U024BE7LH"},
    "links": [
        {"text": "Pipeline run", "url": "https://ci.example.com/runs/5123"},
        {"url": "http://git.example.com/compare/a...b"},
    ],
    "change_ticket": "CHG-10423",
    "risk": "high",
    "callback_url": "https://ci.example.com/hooks/quorum/5123",
    "unknown_key": {"is": "ignored"},
}


def _never_used_session() -> aiohttp.ClientSession:
    raise AssertionError("parse must not touch the network")


@pytest.fixture
def adapter() -> GenericAdapter:
    return GenericAdapter(
        verifier=StandardWebhookVerifier([SECRET], clock=lambda: NOW),
        signer=StandardWebhookSigner(SECRET),
        http=_never_used_session,
        clock=lambda: NOW,
    )


def signed(body: bytes, webhook_id: str = "msg_1", at: datetime = NOW) -> dict[str, str]:
    return StandardWebhookSigner(SECRET).sign(webhook_id, at, body)


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def field_errors(body: bytes) -> list[FieldError]:
    with pytest.raises(InvalidPayload) as excinfo:
        parse_body(body)
    return excinfo.value.errors


def fields(body: Any) -> dict[str, str]:
    raw = body if isinstance(body, bytes) else encode(body)
    return {e.field: e.message for e in field_errors(raw)}


def test_adapter_fits_the_adapter_and_notifier_shapes(adapter: GenericAdapter) -> None:
    # mypy checks the structural match; the runtime check keeps the test honest without mypy.
    as_adapter: PipelineAdapter = adapter
    as_notifier: PipelineNotifier = adapter
    assert as_adapter.source == "generic"
    assert callable(as_notifier.deliver)


# --- parse: happy paths ---------------------------------------------------------------------


def test_parse_full_body(adapter: GenericAdapter) -> None:
    body = encode(FULL_BODY)
    request = adapter.parse(body, signed(body, "msg_full"))

    assert request.source == "generic"
    assert request.delivery_id == "msg_full"
    assert request.service == "payments-api"
    assert request.repository is None
    assert request.environment == "production"
    assert request.risk is Risk.HIGH
    assert request.requester == Requester(
        email="ana@example.com", github="ana-dev", slack="U024BE7LH"
    )
    assert request.details == RequestDetails(
        version="v2.14.0",
        sha="3f786850e387550fdab836ed7e6dc881de23001b",
        title="Release 2.14",
        description="Moves card tokenisation to the new vault.",
        change_ticket="CHG-10423",
        links=(
            Link(text="Pipeline run", url="https://ci.example.com/runs/5123"),
            Link(
                text="http://git.example.com/compare/a...b",
                url="http://git.example.com/compare/a...b",
            ),
        ),
    )
    assert request.callback == {"url": "https://ci.example.com/hooks/quorum/5123"}
    assert request.body_sha256 == hashlib.sha256(body).hexdigest()
    json.dumps(request.callback)  # must stay JSON-serialisable for the outbox


def test_parse_minimal_body_by_repository(adapter: GenericAdapter) -> None:
    body = encode({"repository": "payments/api", "environment": "staging"})
    request = adapter.parse(body, signed(body))
    assert (request.service, request.repository) == (None, "payments/api")
    assert request.risk is None
    assert request.requester == Requester()
    assert request.details == RequestDetails()
    assert request.callback == {}


def test_blank_optional_strings_mean_absent_and_whitespace_is_trimmed() -> None:
    model = parse_body(
        encode(
            {
                "service": "  api ",
                "repository": "",
                "environment": " prod\n",
                "change_ticket": "   ",
                "callback_url": "",
                "requested_by": {"email": " ana@example.com ", "slack": ""},
            }
        )
    )
    assert (model.service, model.repository, model.environment) == ("api", None, "prod")
    assert model.change_ticket is None
    assert model.callback_url is None
    assert model.requested_by is not None
    assert (model.requested_by.email, model.requested_by.slack) == ("ana@example.com", None)


def test_jenkins_block_passes_through_to_the_callback(adapter: GenericAdapter) -> None:
    input_url = "https://jenkins.example.com/job/deploy/42/input/Approve/"
    body = encode({"service": "api", "environment": "prod", "jenkins": {"input_url": input_url}})
    request = adapter.parse(body, signed(body))
    assert request.callback == {"jenkins": {"input_url": input_url}}


# --- parse: errors --------------------------------------------------------------------------


def test_signature_is_checked_before_the_body_is_read(adapter: GenericAdapter) -> None:
    body = b"not json at all"
    headers = signed(b'{"other": "body"}')
    with pytest.raises(SignatureError, match="no matching signature"):
        adapter.parse(body, headers)


def test_stale_signature_is_refused(adapter: GenericAdapter) -> None:
    body = encode(FULL_BODY)
    with pytest.raises(SignatureError, match="outside"):
        adapter.parse(body, signed(body, at=NOW - timedelta(minutes=5, seconds=1)))


def test_unsigned_request_is_refused(adapter: GenericAdapter) -> None:
    with pytest.raises(SignatureError, match="missing"):
        adapter.parse(encode(FULL_BODY), {"content-type": "application/json"})


def test_malformed_json_names_the_body_and_the_position(adapter: GenericAdapter) -> None:
    body = b'{"service": "api",\n "environment": }'
    with pytest.raises(InvalidPayload) as excinfo:
        adapter.parse(body, signed(body))
    assert excinfo.value.errors == [
        FieldError("body", "invalid JSON: Expecting value at line 2 column 17 (char 35)")
    ]


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_body_must_be_an_object(body: bytes) -> None:
    assert fields(body) == {"body": "must be a JSON object"}


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_json_constants_are_refused(constant: bytes) -> None:
    assert list(fields(b'{"service": "a", "environment": "p", "v": ' + constant + b"}")) == ["body"]


def test_body_must_be_utf8() -> None:
    assert fields('{"service": "a", "environment": "p"}'.encode("utf-16")) == {
        "body": "must be UTF-8"
    }


def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    assert list(fields(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")) == ["body"]


def test_missing_environment() -> None:
    assert fields({"service": "api"}) == {"environment": "is required"}


@pytest.mark.parametrize("environment", ["", "   "])
def test_empty_environment(environment: str) -> None:
    assert list(fields({"service": "api", "environment": environment})) == ["environment"]


@pytest.mark.parametrize(
    "body",
    [
        {"environment": "prod"},
        {"environment": "prod", "service": "", "repository": " "},
        {"environment": "prod", "service": None},
    ],
)
def test_missing_service_and_repository(body: dict[str, Any]) -> None:
    assert fields(body) == {"service": "service or repository is required"}


def test_bad_risk() -> None:
    assert fields({"service": "api", "environment": "prod", "risk": "extreme"}) == {
        "risk": "Input should be 'low', 'medium' or 'high'"
    }


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "javascript:alert(1)", "/relative/path", "https://", "http://a b"],
)
def test_bad_link_url(url: str) -> None:
    errors = fields({"service": "api", "environment": "prod", "links": [{"url": url}]})
    assert list(errors) == ["links[0].url"]


def test_bad_callback_url() -> None:
    errors = fields({"service": "api", "environment": "prod", "callback_url": "file:///etc/x"})
    assert errors == {"callback_url": "must be an absolute http(s) URL"}


def test_field_length_limits() -> None:
    errors = fields(
        {
            "service": "api",
            "environment": "prod",
            "title": "t" * 301,
            "description": "d" * 20_001,
            "links": [{"url": "https://x.example/"}] * 21,
        }
    )
    assert set(errors) == {"title", "description", "links"}
    assert "300" in errors["title"]
    assert "20000" in errors["description"]


def test_limits_are_inclusive() -> None:
    model = parse_body(
        encode(
            {"service": "api", "environment": "p", "title": "t" * 300, "description": "d" * 20_000}
        )
    )
    assert model.title == "t" * 300


def test_wrong_types_are_reported_not_coerced() -> None:
    errors = fields(
        {"service": ["api"], "environment": 5, "links": {"url": "https://x"}, "requested_by": "ana"}
    )
    assert set(errors) == {"service", "environment", "links", "requested_by"}


def test_every_offending_field_is_listed_at_once(adapter: GenericAdapter) -> None:
    body = encode(
        {
            "environment": "",
            "risk": "HIGH",
            "requested_by": {"email": "not-an-email"},
            "links": [
                {"text": "ok", "url": "https://ok.example.com"},
                {"text": "bad", "url": "gopher://x"},
                {"text": "no url"},
            ],
            "callback_url": "nope",
            "jenkins": {},
        }
    )
    with pytest.raises(InvalidPayload) as excinfo:
        adapter.parse(body, signed(body))
    assert [e.field for e in excinfo.value.errors] == [
        "environment",
        "requested_by.email",
        "links[1].url",
        "links[2].url",
        "risk",
        "callback_url",
        "jenkins.input_url",
        "service",
    ]
    message = str(excinfo.value)
    assert "links[1].url: must be an absolute http(s) URL" in message
    assert "links[2].url: is required" in message


# --- callback body --------------------------------------------------------------------------


def make_request(**changes: Any) -> ApprovalRequest:
    request = ApprovalRequest(
        id="req_1",
        source="generic",
        service="payments-api",
        environment="production",
        risk=Risk.HIGH,
        owner_team="payments",
        channel="C0123",
        rules=(Rule("owner-review", "payments", 2),),
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(slack="U0REQ"),
        details=RequestDetails(),
        created_at=NOW,
    )
    for key, value in changes.items():
        setattr(request, key, value)
    return request


def test_decision_payload_shape() -> None:
    votes = [
        Vote("req_1", "U1", VoteKind.APPROVE, NOW + timedelta(seconds=5, microseconds=7)),
        Vote("req_1", "U2", VoteKind.APPROVE, NOW + timedelta(minutes=1), "lgtm", actor="U3"),
    ]
    decided = (NOW + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    payload = decision_payload(make_request(), votes, "approved", None, decided)
    assert payload == {
        "type": "approval.decided",
        "request_id": "req_1",
        "decision": "approved",
        "reason": None,
        "votes": [
            {
                "user": "U1",
                "vote": "approve",
                "reason": None,
                "at": "2025-03-04T10:13:00Z",
                "on_behalf_of": None,
            },
            {
                "user": "U3",
                "vote": "approve",
                "reason": "lgtm",
                "at": "2025-03-04T10:13:55Z",
                "on_behalf_of": "U2",
            },
        ],
        "decided_at": "2025-03-04T10:13:55Z",
        "break_glass": False,
    }
    json.dumps(payload)


def test_decision_payload_rejection_and_break_glass() -> None:
    votes = [Vote("req_1", "U9", VoteKind.REJECT, NOW, "tests are red")]
    payload = decision_payload(make_request(break_glass=True), votes, "rejected", "tests", NOW)
    assert (payload["decision"], payload["reason"], payload["break_glass"]) == (
        "rejected",
        "tests",
        True,
    )
    assert payload["votes"][0]["vote"] == "reject"


def test_delivery_payload_for_a_decided_request(adapter: GenericAdapter) -> None:
    votes = [Vote("req_1", "U9", VoteKind.REJECT, NOW, "tests are red")]
    request = make_request(
        state=RequestState.REJECTED,
        decided_at=NOW + timedelta(minutes=2),
        decision_reason="tests are red",
        callback={"url": "https://ci.example.com/hook", "requested_service": "payments-api"},
    )
    payload = adapter.delivery_payload(request, votes)
    assert payload == {
        "url": "https://ci.example.com/hook",
        "body": decision_payload(
            request, votes, "rejected", "tests are red", NOW + timedelta(minutes=2)
        ),
    }
    assert payload["body"]["decision"] == "rejected"
    json.dumps(payload)  # stored in the outbox as JSON


def test_delivery_payload_without_callback_url_is_polled(adapter: GenericAdapter) -> None:
    request = make_request(state=RequestState.EXPIRED, decided_at=NOW, decision_reason="expired")
    payload = adapter.delivery_payload(request, [])
    assert payload["url"] is None
    assert payload["body"]["decision"] == "expired"


@pytest.mark.parametrize("state", [RequestState.PENDING, RequestState.CANCELLED])
def test_delivery_payload_refuses_states_without_a_callback(
    adapter: GenericAdapter, state: RequestState
) -> None:
    with pytest.raises(ValueError, match="decision"):
        adapter.delivery_payload(make_request(state=state, decided_at=NOW), [])


def test_delivery_payload_refuses_undecided_requests(adapter: GenericAdapter) -> None:
    with pytest.raises(ValueError, match="not decided"):
        adapter.delivery_payload(make_request(state=RequestState.APPROVED), [])


def test_decision_payload_refuses_unknown_decisions() -> None:
    with pytest.raises(ValueError, match="decision"):
        decision_payload(make_request(), [], "pending", None, NOW)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 1, 1, 9, 30, 15, 999999, tzinfo=UTC),
        datetime(2025, 1, 1, 11, 30, 15, tzinfo=timezone(timedelta(hours=2))),
        datetime(2025, 1, 1, 4, 30, 15, 1, tzinfo=ZoneInfo("America/New_York")),
    ],
)
def test_iso_utc_shows_whole_seconds_in_utc(value: datetime) -> None:
    assert iso_utc(value) == "2025-01-01T09:30:15Z"


def test_iso_utc_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        iso_utc(datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


# --- docs/openapi.yaml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return document


def validator_for(openapi: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    resource = Resource.from_contents(openapi, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(OPENAPI_URI, resource)
    # Refs are local to the OpenAPI document ("#/components/..."): point them at it.
    rooted = json.loads(json.dumps(schema).replace('"#/', f'"{OPENAPI_URI}#/'))
    return Draft202012Validator(rooted, registry=registry)


def component(openapi: dict[str, Any], name: str) -> Draft202012Validator:
    return validator_for(openapi, {"$ref": f"#/components/schemas/{name}"})


def test_openapi_describes_both_paths_and_the_callback(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.1")
    post = openapi["paths"]["/webhooks/generic"]["post"]
    assert set(post["responses"]) == {"200", "202", "400", "401", "409", "413", "422"}
    header_names = {
        openapi["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"]
        for p in post["parameters"]
    }
    assert header_names == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    get = openapi["paths"]["/api/v1/requests/{id}"]["get"]
    assert set(get["responses"]) == {"200", "401", "404"}
    assert get["security"] == [{"bearerAuth": []}]
    assert "approval.decided" in openapi["webhooks"]
    for schema in openapi["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_openapi_request_schema_accepts_valid_and_rejects_invalid(
    openapi: dict[str, Any],
) -> None:
    validator = component(openapi, "GenericWebhookRequest")
    valid = [FULL_BODY, {"repository": "payments/api", "environment": "staging"}]
    invalid: list[Any] = [
        {"service": "api"},  # no environment
        {"environment": "prod"},  # neither service nor repository
        {"service": "api", "environment": "prod", "risk": "extreme"},
        {"service": "api", "environment": "prod", "links": [{"url": "ftp://x"}]},
        {"service": "api", "environment": "prod", "callback_url": "/relative"},
        {"service": "api", "environment": "prod", "title": "t" * 301},
        [],
    ]
    for body in valid:
        assert not list(validator.iter_errors(body)), body
        parse_body(encode(body))  # the adapter agrees
    for body in invalid:
        assert list(validator.iter_errors(body)), body
        with pytest.raises(InvalidPayload):
            parse_body(encode(body))


def examples(openapi: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every (where, schema, example) of a media type in the document."""

    def media(where: str, content: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
        for media_type in content.values():
            if "example" in media_type:
                yield where, media_type["schema"], media_type["example"]
            for name, example in media_type.get("examples", {}).items():
                yield f"{where} ({name})", media_type["schema"], example["value"]

    for group in ("paths", "webhooks"):
        for path, item in openapi[group].items():
            for method, operation in item.items():
                where = f"{method.upper()} {path}"
                if "requestBody" in operation:
                    yield from media(f"{where} request", operation["requestBody"]["content"])
                for status, response in operation["responses"].items():
                    yield from media(f"{where} {status}", response.get("content", {}))


def test_openapi_examples_match_their_schemas(openapi: dict[str, Any]) -> None:
    checked = 0
    for where, schema, example in examples(openapi):
        errors = [e.message for e in validator_for(openapi, schema).iter_errors(example)]
        assert not errors, f"{where}: {errors}"
        checked += 1
    assert checked >= 12


def test_openapi_request_examples_parse(openapi: dict[str, Any], adapter: GenericAdapter) -> None:
    content = openapi["paths"]["/webhooks/generic"]["post"]["requestBody"]["content"]
    for example in content["application/json"]["examples"].values():
        body = encode(example["value"])
        adapter.parse(body, signed(body))


def test_decision_payload_matches_the_documented_callback(openapi: dict[str, Any]) -> None:
    votes = [
        Vote("req_1", "U1", VoteKind.APPROVE, NOW),
        Vote("req_1", "U2", VoteKind.REJECT, NOW, "no", actor="U3"),
    ]
    for decision in ("approved", "rejected", "expired"):
        payload = decision_payload(make_request(), votes, decision, "why", NOW)
        assert not list(component(openapi, "ApprovalDecided").iter_errors(payload))


def test_documented_error_body_matches_invalid_payload(openapi: dict[str, Any]) -> None:
    # The 400 body the handler renders from InvalidPayload, as documented.
    body = encode({"environment": "", "links": [{"url": "x"}]})
    errors = field_errors(body)
    rendered = {"error": "invalid request body", "fields": [e.as_dict() for e in errors]}
    assert not list(component(openapi, "InvalidPayload").iter_errors(rendered))
