"""Ed25519 callback keys (`v1a`): the key file, signing and verifying, and the timestamp window."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.pipelines.base import SignatureError
from bot.pipelines.callback_keys import (
    CallbackKey,
    CallbackKeyError,
    Ed25519Signer,
    Ed25519Verifier,
    callback_signing,
)
from bot.pipelines.signing import CombinedSigner, StandardWebhookSigner, StandardWebhookVerifier
from tests.paths import FIXTURES

# RFC 8032 section 7.1, TEST 1: the secret key (seed) and the public key it derives.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (FIXTURES / "standard_webhooks" / "vectors.json").read_text()
    )["vectors"][0]
    return data


def rfc_key() -> CallbackKey:
    return CallbackKey.from_secret("whsk_" + base64.b64encode(RFC_SEED).decode(), CREATED)


def at(vector: dict[str, Any], offset: timedelta = timedelta()) -> datetime:
    return datetime.fromtimestamp(vector["timestamp"], tz=UTC) + offset


def test_public_key_is_the_rfc8032_one_in_whpk_form() -> None:
    key = rfc_key()
    assert key.public.public_key == "whpk_" + base64.b64encode(RFC_PUBLIC).decode()
    assert key.public.algorithm == "ed25519"
    assert key.public.signature_version == "v1a"
    assert key.public.key_id.startswith("qck_")
    assert key.public.created == CREATED


def test_known_answer_v1a_signature(vector: dict[str, Any]) -> None:
    # Ed25519 is deterministic: the RFC 8032 key over the Standard Webhooks vector's content
    # (`msg_id.timestamp.payload`) always gives this signature.
    headers = Ed25519Signer(rfc_key()).sign(
        vector["msg_id"], at(vector), vector["payload"].encode()
    )
    assert headers == {
        "webhook-id": vector["msg_id"],
        "webhook-timestamp": str(vector["timestamp"]),
        "webhook-signature": "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPe"
        "PmPsle0zV9jSeGlHFG2NVAw==",
    }


def test_the_signature_is_over_id_timestamp_and_body(vector: dict[str, Any]) -> None:
    # Checked with the cryptography library directly, not through our verifier.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    headers = Ed25519Signer(rfc_key()).sign("msg_1", at(vector), b'{"a":1}')
    signature = base64.b64decode(headers["webhook-signature"].removeprefix("v1a,"))
    content = f"msg_1.{vector['timestamp']}.".encode() + b'{"a":1}'
    Ed25519PublicKey.from_public_bytes(RFC_PUBLIC).verify(signature, content)


def test_round_trip_and_what_does_not_verify(vector: dict[str, Any]) -> None:
    key = CallbackKey.generate(CREATED)
    other = CallbackKey.generate(CREATED)
    now = at(vector)
    body = b'{"type":"approval.decided"}'
    headers = Ed25519Signer(key).sign("dlv_1", now, body)
    verifier = Ed25519Verifier([other.public.public_key, key.public.public_key], clock=lambda: now)
    assert verifier.verify(body, headers) == "dlv_1"
    with pytest.raises(SignatureError, match="no matching signature"):
        Ed25519Verifier([other.public.public_key], clock=lambda: now).verify(body, headers)
    with pytest.raises(SignatureError, match="no matching signature"):
        verifier.verify(body + b" ", headers)
    with pytest.raises(SignatureError, match="no matching signature"):
        verifier.verify(body, {**headers, "webhook-id": "dlv_2"})
    with pytest.raises(SignatureError, match="no well-formed v1a"):
        verifier.verify(body, {**headers, "webhook-signature": "v1,AAAA v1a,AAAA"})
    with pytest.raises(SignatureError, match="outside the allowed"):
        Ed25519Verifier(
            [key.public.public_key], clock=lambda: now + timedelta(minutes=5, seconds=1)
        ).verify(body, headers)


def test_combined_signer_sends_v1a_and_v1_and_each_receiver_verifies(
    vector: dict[str, Any],
) -> None:
    key = rfc_key()
    signer = CombinedSigner(Ed25519Signer(key), StandardWebhookSigner(vector["secret"]))
    headers = signer.sign(vector["msg_id"], at(vector), vector["payload"].encode())
    v1a, v1 = headers["webhook-signature"].split(" ")
    assert v1a.startswith("v1a,")
    assert v1 == vector["expected_signature"]  # the published v1 vector, unchanged
    body = vector["payload"].encode()
    now = at(vector)
    assert Ed25519Verifier([key.public.public_key], clock=lambda: now).verify(body, headers)
    assert StandardWebhookVerifier([vector["secret"]], clock=lambda: now).verify(body, headers)


@pytest.mark.parametrize(
    "stamp",
    ["999999999999", "253402300800", "-99999999999999", "1e309", "nan", "9" * 400, "١٢٣"],
)
def test_overflowing_timestamps_are_invalid_not_errors(vector: dict[str, Any], stamp: str) -> None:
    headers = {**vector["headers"], "webhook-timestamp": stamp}
    body = vector["payload"].encode()
    now = at(vector)
    for verifier in (
        StandardWebhookVerifier([vector["secret"]], clock=lambda: now),
        Ed25519Verifier([rfc_key().public.public_key], clock=lambda: now),
    ):
        with pytest.raises(SignatureError, match="webhook-timestamp"):
            verifier.verify(body, headers)


def test_key_file_round_trip_mode_0600_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "callback.key"
    key = CallbackKey.generate(CREATED)
    key.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = CallbackKey.from_file(path)
    assert loaded.public == key.public
    with pytest.raises(FileExistsError):
        CallbackKey.generate(CREATED).write(path)
    assert CallbackKey.from_file(path).public == key.public


def test_key_file_accepts_a_seed_alone_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "seed.key"
    seed = base64.b64encode(RFC_SEED).decode()
    path.write_text(f"# mine\n\ncreated: 2026-01-02T03:04:05Z\nsecret_key: whsk_{seed}\n")
    assert CallbackKey.from_file(path).public == rfc_key().public


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no 'secret_key"),
        ("created: 2026-01-02T03:04:05Z\n", "no 'secret_key"),
        ("secret_key: whsk_" + base64.b64encode(RFC_SEED).decode(), "no 'created"),
        ("created: yesterday\nsecret_key: whsk_AAAA", "not an ISO-8601"),
        ("created: 2026-01-02T03:04:05\nsecret_key: whsk_AAAA", "no time zone"),
        ("created: 2026-01-02T03:04:05Z\nsecret_key: whsec_AAAA", "does not start with 'whsk_'"),
        ("created: 2026-01-02T03:04:05Z\nsecret_key: whsk_%%%", "not base64"),
        ("created: 2026-01-02T03:04:05Z\nsecret_key: whsk_AAAA", "neither 32 nor 64"),
        (
            "created: 2026-01-02T03:04:05Z\nsecret_key: whsk_"
            + base64.b64encode(RFC_SEED + bytes(32)).decode(),
            "does not match",
        ),
        ("hello world", "line 1"),
        ("created: 2026-01-02T03:04:05Z\ncreated: 2026-01-02T03:04:05Z", "repeats"),
    ],
)
def test_bad_key_files_name_the_file_and_problem_never_the_key(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(CallbackKeyError, match=problem) as info:
        CallbackKey.from_file(path)
    assert str(path) in str(info.value)
    assert base64.b64encode(RFC_SEED).decode() not in str(info.value)


def test_unreadable_and_oversized_key_files(tmp_path: Path) -> None:
    with pytest.raises(CallbackKeyError, match="cannot be read"):
        CallbackKey.from_file(tmp_path / "missing.key")
    big = tmp_path / "big.key"
    big.write_bytes(b"#" * 5000)
    with pytest.raises(CallbackKeyError, match="larger than"):
        CallbackKey.from_file(big)
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(CallbackKeyError, match="UTF-8"):
        CallbackKey.from_file(binary)


def test_private_key_never_in_reprs() -> None:
    key = rfc_key()
    secret = base64.b64encode(RFC_SEED).decode()
    signer = CombinedSigner(Ed25519Signer(key))
    for text in (repr(key), str(key), repr(Ed25519Signer(key)), repr(signer)):
        assert secret not in text
        assert "redacted" in text


def test_callback_signing_choices(tmp_path: Path, vector: dict[str, Any]) -> None:
    path = tmp_path / "callback.key"
    rfc_key().write(path)
    none = callback_signing(key_file=None, secrets=[], ephemeral=False, now=CREATED)
    assert (none.signer, none.keys, none.ephemeral) == (None, (), False)

    both = callback_signing(key_file=path, secrets=[vector["secret"]], ephemeral=False, now=CREATED)
    assert both.keys == (rfc_key().public,)
    assert both.signer is not None
    entries = both.signer.sign("m", CREATED, b"{}")["webhook-signature"].split()
    assert [e.split(",")[0] for e in entries] == ["v1a", "v1"]

    secret_only = callback_signing(
        key_file=None, secrets=[vector["secret"]], ephemeral=False, now=CREATED
    )
    assert secret_only.keys == ()
    assert secret_only.signer is not None

    dev = callback_signing(key_file=None, secrets=[], ephemeral=True, now=CREATED)
    assert dev.ephemeral
    assert len(dev.keys) == 1
    assert dev.keys != callback_signing(key_file=None, secrets=[], ephemeral=True, now=CREATED).keys

    with pytest.raises(CallbackKeyError):
        callback_signing(key_file=tmp_path / "nope", secrets=[], ephemeral=False, now=CREATED)
