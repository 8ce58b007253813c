"""`POST /webhooks/{source}` under fuzz: the generic webhook (Standard Webhooks), GitHub
(X-Hub-Signature-256) and GitLab (X-Gitlab-Token and a signing secret, both configured), real
bodies mutated, signed and not; unknown sources (Jenkins has no inbound route).

Asserted for every example: never a 5xx; 401 for any wrong, missing, stale or out-of-range
signature part; 413 over 1 MiB; 404 for an unknown source; for a correctly signed body an
answer (200/202/204) or a refusal (400/409/415/422); and a refusal changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.harness import WEBHOOK_SECRET, body_for
from tests.fakes.github_payloads import protection_rule
from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.running import GITLAB_SIGNING_SECRET, Answer, FuzzApp, Outgoing, start_app
from tests.fuzz.strategies import OVERSIZE, encoded, keys, mutated, odd_bodies
from tests.fuzz.webhook_signing import (
    DUPLICATED,
    GOOD,
    HUB_BAD,
    STANDARD_BAD,
    TOKEN_BAD,
    hub_headers,
    hub_modes,
    standard_headers,
    standard_modes,
    token_headers,
    token_modes,
)
from tests.paths import FIXTURES

JSON = "application/json"
REFUSALS = {400, 401, 404, 409, 413, 415, 422}
SIGNED_ANSWERS = {200, 202, 204, 400, 409, 415, 422}
content_types = st.sampled_from(
    (
        JSON,
        JSON,
        JSON,
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=bogus",
    )
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzApp]:
    yield from start_app(Path(tmp_path_factory.mktemp("fuzz-webhooks")))


def _now() -> int:
    return int(time.time())


def generic_base(app: FuzzApp) -> dict[str, Any]:
    return body_for(callback_url=app.env.pipeline.url)


def github_base(app: FuzzApp) -> dict[str, Any]:
    return protection_rule(app.github.callback_url(), with_sha_ref=True)


def gitlab_base() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "gitlab" / "deployment_event.json").read_text())
    data["project"]["path_with_namespace"] = "acme/storefront"
    data.update({"status": "blocked", "environment": "production"})
    return data


def generic(body: bytes, mode: str, content_type: str | None) -> Outgoing:
    headers = standard_headers(WEBHOOK_SECRET, body, mode, _now())
    return Outgoing("POST", "/webhooks/generic", body, headers, content_type)


def github(body: bytes, mode: str, content_type: str | None, event: str) -> Outgoing:
    return Outgoing("POST", "/webhooks/github", body, hub_headers(body, mode, event), content_type)


def gitlab(
    body: bytes, sign_mode: str, token_mode: str, content_type: str | None, event: str
) -> Outgoing:
    headers = [
        ("X-Gitlab-Event", event),
        ("X-Gitlab-Event-UUID", f"uuid-{time.monotonic_ns()}"),
        *token_headers(token_mode),
        *standard_headers(GITLAB_SIGNING_SECRET, body, sign_mode, _now()),
    ]
    return Outgoing("POST", "/webhooks/gitlab", body, headers, content_type)


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check(answer: Answer, bad: bool, good: bool, text_signed: bytes | None = None) -> None:
    """`bad`: some signature part is wrong (401); `good`: every part is right. `text_signed`:
    the body, when the scheme (Standard Webhooks) signs text: bytes that are not UTF-8 cannot
    carry a valid signature there, so 401 is an answer too."""
    assert answer.status < 500, answer.describe()
    assert not answer.leaks, f"a secret in the {answer.leaks}: {answer.describe()}"
    if bad:
        assert answer.status == 401, answer.describe()
    elif good:
        allowed = SIGNED_ANSWERS | (
            {401} if text_signed is not None and not _utf8(text_signed) else set()
        )
        assert answer.status in allowed, answer.describe()
    if answer.status in REFUSALS:
        assert not answer.changed, f"refused, yet changed: {answer.describe()}"


def test_real_bodies_open_requests(app: FuzzApp) -> None:
    sent = [
        generic(json.dumps(generic_base(app)).encode(), GOOD, JSON),
        github(json.dumps(github_base(app)).encode(), GOOD, JSON, "deployment_protection_rule"),
        gitlab(json.dumps(gitlab_base()).encode(), GOOD, GOOD, JSON, "Deployment Hook"),
    ]
    for out in sent:
        answer = app.observe(out)
        assert answer.status in {200, 202}, answer.describe()
        assert "requests" in answer.changed or answer.status == 200, answer.describe()
    # The log tap that checks every example for secrets sees Quorum's log lines.
    logged = len(app.log.lines)
    refused = app.observe(generic(json.dumps(generic_base(app)).encode(), "wrong_secret", JSON))
    assert refused.status == 401, refused.describe()
    assert any("refused" in line for line in app.log.lines[logged:]), app.log.lines[logged:]


@fuzz_settings()
@given(data=st.data(), mode=standard_modes, content_type=content_types)
def test_generic(app: FuzzApp, data: st.DataObject, mode: str, content_type: str | None) -> None:
    body = data.draw(st.one_of(encoded(mutated(generic_base(app))), odd_bodies))
    answer = app.observe(generic(body, mode, content_type))
    _check(answer, bad=mode in STANDARD_BAD, good=mode == GOOD, text_signed=body)


@fuzz_settings()
@given(
    data=st.data(),
    mode=hub_modes,
    content_type=content_types,
    event=st.sampled_from(
        ["deployment_protection_rule"] * 4 + ["ping", "push", "", "Deployment_Protection_Rule"]
    ),
)
def test_github(
    app: FuzzApp, data: st.DataObject, mode: str, content_type: str | None, event: str
) -> None:
    body = data.draw(st.one_of(encoded(mutated(github_base(app))), odd_bodies))
    answer = app.observe(github(body, mode, content_type, event))
    # Deliveries of events Quorum does not gate are answered before the delivery id is read.
    gated = event == "deployment_protection_rule"
    _check(answer, bad=mode in HUB_BAD and (gated or mode != "no_delivery"), good=mode == GOOD)


@fuzz_settings()
@given(
    body=st.one_of(encoded(mutated(gitlab_base())), odd_bodies),
    sign_mode=standard_modes,
    token_mode=token_modes,
    content_type=content_types,
    event=st.sampled_from(["Deployment Hook"] * 4 + ["Push Hook", "", "deployment hook"]),
)
def test_gitlab(
    app: FuzzApp, body: bytes, sign_mode: str, token_mode: str, content_type: str | None, event: str
) -> None:
    answer = app.observe(gitlab(body, sign_mode, token_mode, content_type, event))
    bad = sign_mode in STANDARD_BAD or token_mode in TOKEN_BAD
    _check(answer, bad=bad, good=sign_mode == GOOD and token_mode == GOOD, text_signed=body)


@fuzz_settings(weight=0.4)
@given(
    source=st.one_of(st.sampled_from(["jenkins", "GitHub", "generic.", "x" * 300]), keys),
    body=st.one_of(odd_bodies, st.just(json.dumps(body_for()).encode())),
    mode=standard_modes,
)
def test_unknown_sources_are_404(app: FuzzApp, source: str, body: bytes, mode: str) -> None:
    if source in {"generic", "github", "gitlab"}:
        return
    out = generic(body, mode, JSON)
    answer = app.observe(
        Outgoing(
            "POST",
            f"/webhooks/{quote(source.encode('utf-8', 'surrogatepass'), safe='')}",
            body,
            out.headers,
            JSON,
        )
    )
    assert answer.status < 500, answer.describe()
    if source and "/" not in source:
        assert answer.status in {404, 405}, answer.describe()
    assert answer.status < 400 or not answer.changed, answer.describe()


@pytest.mark.parametrize("source", ["generic", "github", "gitlab"])
@pytest.mark.parametrize("signed", [True, False])
def test_a_body_over_one_mebibyte_is_413(app: FuzzApp, source: str, signed: bool) -> None:
    mode = GOOD if signed else "no_signature"
    out = {
        "generic": lambda: generic(OVERSIZE, mode, JSON),
        "github": lambda: github(OVERSIZE, mode, JSON, "deployment_protection_rule"),
        "gitlab": lambda: gitlab(OVERSIZE, mode, GOOD, JSON, "Deployment Hook"),
    }[source]()
    answer = app.observe(out)
    assert answer.status == 413, answer.describe()
    assert not answer.changed, answer.describe()


def test_duplicated_signature_headers_are_not_a_crash(app: FuzzApp) -> None:
    body = json.dumps(generic_base(app)).encode()
    answer = app.observe(generic(body, DUPLICATED, JSON))
    assert answer.status < 500, answer.describe()
