"""The read side under fuzz: `GET /api/v1/requests/{id}` and `/events` (bearer token or not,
any id), `/healthz`, `/readyz`, `/metrics` (any query, any method) and paths that do not exist.

Asserted for every example: never a 5xx; 401 without the right bearer token; 404 for an unknown
request or path; 405 for a method a route does not take; 200 for a known request; and a read
changes nothing: no rows and no Slack calls (the status API answers from what is stored).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.harness import API_TOKEN
from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.running import Answer, FuzzApp, Outgoing, start_app
from tests.fuzz.strategies import HOSTILE_STRINGS

HEALTH = ("/healthz", "/readyz", "/metrics")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FuzzApp, str]]:
    for running in start_app(Path(tmp_path_factory.mktemp("fuzz-read"))):
        request_id = running.run(running.env.open())
        yield running, request_id


def _quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


AUTH = {
    "good": [("Authorization", f"Bearer {API_TOKEN}")],
    "lowercase_scheme": [("Authorization", f"bearer {API_TOKEN}")],
}
BAD_AUTH = {
    "none": [],
    "wrong": [("Authorization", "Bearer not-the-token")],
    "prefix": [("Authorization", f"Bearer {API_TOKEN[:-1]}")],
    "longer": [("Authorization", f"Bearer {API_TOKEN}x")],
    "basic": [("Authorization", f"Basic {API_TOKEN}")],
    "no_scheme": [("Authorization", API_TOKEN)],
    "empty": [("Authorization", "")],
    "scheme_only": [("Authorization", "Bearer")],
    "token_in_query": [],
    "unicode": [("Authorization", "Bearer tökén")],
}
auth_modes = st.sampled_from(["good", "good", "good", "lowercase_scheme", *BAD_AUTH])
request_ids = st.one_of(
    st.just("known"),
    st.text(min_size=1, max_size=40),
    st.sampled_from([s for s in HOSTILE_STRINGS if s]),
    st.sampled_from(["..", ".", "req_", "req_" + "0" * 20, "%00", "a/b", "9" * 400]),
)


def _check_read(answer: Answer) -> None:
    assert answer.status < 500, answer.describe()
    assert not answer.leaks, f"a secret in the {answer.leaks}: {answer.describe()}"
    assert not answer.changed, f"a read changed something: {answer.describe()}"


@fuzz_settings()
@given(
    request_id=request_ids,
    auth=auth_modes,
    trail=st.booleans(),
    method=st.sampled_from(["GET"] * 6 + ["HEAD", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_status_and_trail(
    app: tuple[FuzzApp, str], request_id: str, auth: str, trail: bool, method: str
) -> None:
    running, known = app
    rid = known if request_id == "known" else request_id
    path = f"/api/v1/requests/{_quoted(rid)}" + ("/events" if trail else "")
    if auth == "token_in_query":
        path += f"?access_token={API_TOKEN}"
    headers = AUTH.get(auth) or BAD_AUTH.get(auth, [])
    answer = running.observe(Outgoing(method, path, headers=headers))
    _check_read(answer)
    if any(c in rid for c in "{}"):  # the route's pattern takes no braces
        assert answer.status in {404, 405}, answer.describe()
    elif method not in {"GET", "HEAD"}:
        assert answer.status == 405, answer.describe()
    elif auth in BAD_AUTH:
        assert answer.status == 401, answer.describe()
    elif rid == known:
        assert answer.status == 200, answer.describe()
        if method == "GET":
            data = json.loads(answer.text)
            assert data.get("id") == known or "events" in data, answer.describe()
    else:
        assert answer.status == 404, answer.describe()


@fuzz_settings(weight=0.6)
@given(
    path=st.sampled_from(HEALTH),
    query=st.one_of(st.just(""), st.text(max_size=30).map(lambda q: "?" + _quoted(q))),
    accept=st.sampled_from(
        ["*/*", "text/plain", "application/json", "application/xml", "\u00e9", ""]
    ),
    method=st.sampled_from(["GET"] * 6 + ["HEAD", "POST", "PUT", "DELETE"]),
    auth=st.sampled_from(["none", "good", "wrong"]),
)
def test_health_and_metrics(
    app: tuple[FuzzApp, str], path: str, query: str, accept: str, method: str, auth: str
) -> None:
    headers = [("Accept", accept), *(AUTH.get(auth) or BAD_AUTH[auth])]
    answer = app[0].observe(Outgoing(method, path + query, headers=headers))
    _check_read(answer)
    if method in {"GET", "HEAD"}:
        assert answer.status == 200, answer.describe()
    else:
        assert answer.status == 405, answer.describe()


segments = st.one_of(
    st.text(max_size=12).map(_quoted),
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "", "api", "v1", "requests", "webhooks", "slack"]),
)


@fuzz_settings(weight=0.6)
@given(
    parts=st.lists(segments, min_size=1, max_size=6),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
    body=st.sampled_from([b"", b"{}", b"\xff"]),
)
def test_unknown_paths(
    app: tuple[FuzzApp, str], parts: list[str], method: str, body: bytes
) -> None:
    path = "/" + "/".join(parts)
    answer = app[0].observe(Outgoing(method, path, body, content_type="application/json"))
    assert answer.status < 500, answer.describe()
    if answer.status >= 400:
        assert not answer.changed, f"refused, yet changed: {answer.describe()}"
    known = path.rstrip("/") in {"/slack/events", *HEALTH} or path.startswith(
        ("/webhooks/", "/api/v1/")
    )
    if not known:
        assert answer.status in {404, 405}, answer.describe()
