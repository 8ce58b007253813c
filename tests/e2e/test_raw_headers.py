"""Bytes an HTTP client library would never send: non-UTF-8 header values over a raw socket.

aiohttp decodes header bytes with surrogateescape; a verifier that encodes them back strictly
raised UnicodeEncodeError (a 500 with a traceback) before it could say "wrong signature". Also a
NUL in a request id, which PostgreSQL refuses as a query parameter.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.harness import API_TOKEN, Env
from tests.e2e.test_github import GitHubEnv, gh, key  # noqa: F401 (fixtures)
from tests.e2e.test_gitlab import GitLabEnv, gl  # noqa: F401 (fixtures)


async def raw(env: Env, method: bytes, path: bytes, headers: bytes, body: bytes = b"{}") -> int:
    """The status of one request written byte for byte."""
    host, port = env.quorum.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: quorum\r\n"
        + headers
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1])


def _now() -> bytes:
    return str(int(time.time())).encode()


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        (
            b"POST",
            b"/slack/events",
            b"X-Slack-Request-Timestamp: %s\r\nX-Slack-Signature: v0=\xff\xfe\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n",
        ),
        (
            b"POST",
            b"/webhooks/generic",
            b"webhook-id: \xff\r\nwebhook-timestamp: %s\r\nwebhook-signature: v1,\xff\r\n"
            b"Content-Type: application/json\r\n",
        ),
        (
            b"POST",
            b"/webhooks/generic",
            b"webhook-id: msg_1\r\nwebhook-timestamp: %s\r\nwebhook-signature: v1,\xff\r\n"
            b"Content-Type: application/json\r\n",
        ),
        (b"GET", b"/api/v1/requests/req_x", b"X-Now: %s\r\nAuthorization: Bearer \xff\xfe\r\n"),
    ],
)
async def test_non_utf8_signatures_and_tokens_are_refused_not_500(
    env: Env, method: bytes, path: bytes, headers: bytes
) -> None:
    body = b"" if method == b"GET" else b"{}"
    assert await raw(env, method, path, headers % _now(), body) == 401
    async with env.quorum.deps.database.unit_of_work(read_only=True) as uow:
        assert await uow.requests.count_open() == 0


async def test_non_utf8_github_signature_is_401(gh: GitHubEnv) -> None:  # noqa: F811
    headers = (
        b"X-Hub-Signature-256: sha256=\xff\xfe\r\nX-GitHub-Event: deployment_protection_rule\r\n"
        b"X-GitHub-Delivery: d-raw\r\nContent-Type: application/json\r\n"
    )
    assert await raw(gh.env, b"POST", b"/webhooks/github", headers) == 401


async def test_non_utf8_gitlab_token_is_401(gl: GitLabEnv) -> None:  # noqa: F811
    headers = (
        b"X-Gitlab-Token: \xff\xfe\r\nX-Gitlab-Event: Deployment Hook\r\n"
        b"Content-Type: application/json\r\n"
    )
    assert await raw(gl.env, b"POST", b"/webhooks/gitlab", headers) == 401


@pytest.mark.parametrize("suffix", [b"", b"/events"])
async def test_a_request_id_that_is_not_one_is_404_before_the_database(
    env: Env, suffix: bytes
) -> None:
    request_id = await env.open()
    token = b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
    for odd in (b"abc%00def", b"req_%00", b"req_" + b"a" * 300, b"%E2%80%8B"):
        status = await raw(env, b"GET", b"/api/v1/requests/" + odd + suffix, token, b"")
        assert status == 404, odd
    path = b"/api/v1/requests/" + request_id.encode() + suffix
    assert await raw(env, b"GET", path, token, b"") == 200
