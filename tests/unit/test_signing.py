"""Standard Webhooks signing and verification against the published test vector."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr

from bot.pipelines.base import SignatureError
from bot.pipelines.signing import StandardWebhookSigner, StandardWebhookVerifier, parse_secrets
from tests.paths import FIXTURES

VECTORS = FIXTURES / "standard_webhooks" / "vectors.json"
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret of 24 byte").decode()


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())["vectors"][0]
    return data


def at(vector: dict[str, Any], offset: timedelta = timedelta()) -> datetime:
    return datetime.fromtimestamp(vector["timestamp"], tz=UTC) + offset


def verifier(secrets: list[Any], now: datetime) -> StandardWebhookVerifier:
    return StandardWebhookVerifier(secrets, clock=lambda: now)


def test_signer_produces_the_vector_signature(vector: dict[str, Any]) -> None:
    headers = StandardWebhookSigner(vector["secret"]).sign(
        vector["msg_id"], at(vector), vector["payload"].encode()
    )
    assert headers == vector["headers"]
    assert headers["webhook-signature"] == vector["expected_signature"]


def test_signer_converts_non_utc_timestamps(vector: dict[str, Any]) -> None:
    # Webhook.sign replaces tzinfo instead of converting; our signer must convert.
    plus_two = at(vector).astimezone(timezone(timedelta(hours=2)))
    headers = StandardWebhookSigner(vector["secret"]).sign(
        vector["msg_id"], plus_two, vector["payload"].encode()
    )
    assert headers["webhook-timestamp"] == str(vector["timestamp"])
    assert headers["webhook-signature"] == vector["expected_signature"]


def test_signer_with_rotation_sends_one_signature_per_secret(vector: dict[str, Any]) -> None:
    headers = StandardWebhookSigner(OTHER_SECRET, vector["secret"]).sign(
        vector["msg_id"], at(vector), vector["payload"].encode()
    )
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert entries[1] == vector["expected_signature"]
    # A receiver holding only the second secret accepts it.
    assert (
        verifier([vector["secret"]], at(vector)).verify(vector["payload"].encode(), headers)
        == vector["msg_id"]
    )


def test_signer_rejects_naive_timestamps(vector: dict[str, Any]) -> None:
    naive = datetime(2021, 2, 25, 15, 2, 10)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive"):
        StandardWebhookSigner(vector["secret"]).sign("msg_1", naive, b"{}")


def test_verify_passes_at_the_vector_timestamp(vector: dict[str, Any]) -> None:
    result = verifier([vector["secret"]], at(vector)).verify(
        vector["payload"].encode(), vector["headers"]
    )
    assert result == vector["msg_id"]


def test_verify_accepts_secretstr_and_any_header_case(vector: dict[str, Any]) -> None:
    headers = {k.upper(): v for k, v in vector["headers"].items()}
    result = verifier([SecretStr(vector["secret"])], at(vector)).verify(
        vector["payload"].encode(), headers
    )
    assert result == vector["msg_id"]


@pytest.mark.parametrize(
    "offset",
    [timedelta(minutes=5), -timedelta(minutes=5)],
    ids=["5 min after", "5 min before"],
)
def test_verify_passes_at_the_edge_of_the_window(vector: dict[str, Any], offset: timedelta) -> None:
    assert verifier([vector["secret"]], at(vector, offset)).verify(
        vector["payload"].encode(), vector["headers"]
    )


@pytest.mark.parametrize(
    "offset",
    [timedelta(minutes=5, seconds=1), -timedelta(minutes=5, seconds=1)],
    ids=["stale", "from the future"],
)
def test_verify_fails_one_second_past_the_window(vector: dict[str, Any], offset: timedelta) -> None:
    with pytest.raises(SignatureError, match="outside the allowed"):
        verifier([vector["secret"]], at(vector, offset)).verify(
            vector["payload"].encode(), vector["headers"]
        )


def test_verify_honours_a_custom_tolerance(vector: dict[str, Any]) -> None:
    now = at(vector, timedelta(seconds=31))
    strict = StandardWebhookVerifier(
        [vector["secret"]], clock=lambda: now, tolerance=timedelta(seconds=30)
    )
    with pytest.raises(SignatureError):
        strict.verify(vector["payload"].encode(), vector["headers"])


def test_verify_fails_with_a_wrong_secret(vector: dict[str, Any]) -> None:
    with pytest.raises(SignatureError, match="no matching signature"):
        verifier([OTHER_SECRET], at(vector)).verify(vector["payload"].encode(), vector["headers"])


def test_verify_passes_when_the_right_secret_is_second(vector: dict[str, Any]) -> None:
    secrets = parse_secrets(f"{OTHER_SECRET} {vector['secret']}")
    result = verifier(secrets, at(vector)).verify(vector["payload"].encode(), vector["headers"])
    assert result == vector["msg_id"]


def test_verify_fails_when_the_body_was_altered(vector: dict[str, Any]) -> None:
    with pytest.raises(SignatureError, match="no matching signature"):
        verifier([vector["secret"]], at(vector)).verify(b'{"test": 2432232315}', vector["headers"])


def test_verify_skips_malformed_and_foreign_entries(vector: dict[str, Any]) -> None:
    headers = dict(vector["headers"])
    headers["webhook-signature"] = (
        f"garbage v2,abc v1,!!!notbase64 v1 v1,{vector['expected_signature'][3:]}"
    )
    result = verifier([vector["secret"]], at(vector)).verify(vector["payload"].encode(), headers)
    assert result == vector["msg_id"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": None}, "missing header"),
        ({"webhook-timestamp": None}, "missing header"),
        ({"webhook-signature": None}, "missing header"),
        ({"webhook-signature": "   "}, "missing header"),
        ({"webhook-timestamp": "1614265330.5"}, "not an integer"),
        ({"webhook-timestamp": "soon"}, "not an integer"),
        ({"webhook-timestamp": "-1614265330"}, "not an integer"),
        ({"webhook-timestamp": "9" * 400}, "not an integer"),
        ({"webhook-id": "x" * 300}, "webhook-id"),
        ({"webhook-id": "msg\x00id"}, "webhook-id"),
        ({"webhook-signature": "v1"}, "no well-formed"),
        ({"webhook-signature": "v1,"}, "no matching signature"),
        ({"webhook-signature": "v1,a,b,c"}, "no well-formed"),
        ({"webhook-signature": "v1,%%%%"}, "no well-formed"),
        ({"webhook-signature": "v1a,abcd"}, "no well-formed"),
        ({"webhook-signature": "v1,YWJj"}, "no matching signature"),
    ],
)
def test_malformed_headers_raise_signature_error_only(
    vector: dict[str, Any], change: dict[str, str | None], reason: str
) -> None:
    headers = {k: v for k, v in {**vector["headers"], **change}.items() if v is not None}
    with pytest.raises(SignatureError, match=reason):
        verifier([vector["secret"]], at(vector)).verify(vector["payload"].encode(), headers)


def test_verify_rejects_a_body_that_is_not_utf8(vector: dict[str, Any]) -> None:
    with pytest.raises(SignatureError, match="UTF-8"):
        verifier([vector["secret"]], at(vector)).verify(b"\xff\xfe", vector["headers"])


def test_secrets_never_appear_in_reprs(vector: dict[str, Any]) -> None:
    key = vector["secret"].removeprefix("whsec_")
    v = verifier([vector["secret"], OTHER_SECRET], at(vector))
    s = StandardWebhookSigner(vector["secret"])
    for text in (repr(v), str(v), repr(s), str(s)):
        assert key not in text
        assert "redacted" in text


def test_verifier_refuses_a_bare_string_and_an_empty_list(vector: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        StandardWebhookVerifier(vector["secret"], clock=lambda: at(vector))
    with pytest.raises(ValueError, match="at least one"):
        StandardWebhookVerifier([], clock=lambda: at(vector))


def test_parse_secrets_splits_on_whitespace(vector: dict[str, Any]) -> None:
    assert parse_secrets(f"  {vector['secret']}\n {OTHER_SECRET} ") == [
        vector["secret"],
        OTHER_SECRET,
    ]


def test_parse_secrets_accepts_unpadded_base64() -> None:
    unpadded = "whsec_" + base64.b64encode(b"twenty-five bytes secret!").decode().rstrip("=")
    assert parse_secrets(unpadded) == [unpadded]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "at least one"),
        ("   ", "at least one"),
        ("sk_live_supersecretvalue", "secret #1 does not start with 'whsec_'"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_not*base64!", "secret #2 is not base64"),
        ("whsec_", "secret #1 is not base64"),
        ("whsec_abcde", "secret #1 is not base64"),
    ],
)
def test_parse_secrets_errors_name_the_position_never_the_value(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as excinfo:
        parse_secrets(value)
    for part in value.split():
        if part != "whsec_":
            assert part.removeprefix("whsec_") not in str(excinfo.value)
