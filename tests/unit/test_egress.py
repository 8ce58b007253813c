"""The egress policy (bot/pipelines/egress.py): which URLs a webhook may name, which addresses a
name may resolve to at connect time, and how a receiver's answer is described."""

from __future__ import annotations

import json
from ipaddress import ip_address

import aiohttp
import pytest

from bot.domain.model import Delivery, RequestState
from bot.pipelines.base import InboundRequest
from bot.pipelines.egress import (
    EgressConfigError,
    EgressPolicy,
    EgressRefused,
    EgressResolver,
    address_kind,
    url_under,
)
from bot.pipelines.gitlab import GitLabAdapter
from bot.pipelines.hmac_tokens import TokenVerifier
from bot.pipelines.outbound import callback_result
from bot.settings import SettingsError, load_settings
from tests.fakes.dns import FakeDns
from tests.fakes.gitlab_api import API_TOKEN as GITLAB_API_TOKEN
from tests.fakes.gitlab_api import FakeGitLab
from tests.paths import FIXTURES
from tests.storage.builders import NOW, a_request

PUBLIC_ONLY = EgressPolicy.parse("")
ALLOWING = EgressPolicy.parse("127.0.0.1, *.corp.example ci.internal\n10.1.0.0/16 fd12::/16")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),  # ULA
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address under test, not a bind)
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:5", "private"),  # NAT64 of 10.0.0.5
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("192.0.2.10", "private"),  # documentation range: not public
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ip_address(address)) == kind


@pytest.mark.parametrize(
    ("url", "public_only", "allowing"),
    [
        ("https://ci.example.com/hook", None, None),
        ("https://8.8.8.8/hook", None, None),
        ("https://[2606:4700::1111]/hook", None, None),
        # http only for hosts listed explicitly
        ("http://ci.example.com/hook", "must use https", "must use https"),
        ("http://a.corp.example/hook", "must use https", None),
        ("http://deep.a.corp.example/hook", "must use https", None),
        ("https://corp.example/hook", None, None),  # public name; the wildcard is not the name
        ("http://corp.example/hook", "must use https", "must use https"),
        ("http://ci.internal/hook", "must use https", None),
        ("http://CI.Internal./hook", "must use https", None),  # case and a trailing dot
        # address literals
        ("http://127.0.0.1:8080/cb", "127.0.0.1 is a loopback address", None),
        ("https://127.0.0.1./cb", "127.0.0.1 is a loopback address", None),
        ("https://127.0.0.2/cb", "loopback address", "loopback address"),
        ("https://10.0.0.5:8500/v1/kv", "10.0.0.5 is a private address", "private address"),
        ("https://10.1.2.3/", "private address", None),
        ("https://[::1]/", "::1 is a loopback address", "loopback address"),
        ("http://[::ffff:127.0.0.1]/", "is a loopback address", None),
        ("https://[::ffff:7f00:2]/", "is a loopback address", "is a loopback address"),
        ("https://[fd12::5]/", "private address", None),
        ("https://[fe80::1]/", "link-local address", "link-local address"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata address", "metadata"),
        ("https://[fd00:ec2::254]/", "cloud metadata address", "cloud metadata address"),
        ("https://100.100.100.200/", "cloud metadata address", "cloud metadata address"),
        ("https://100.64.1.1/", "shared (CGNAT) address", "shared (CGNAT) address"),
        ("https://224.0.0.1/", "multicast address", "multicast address"),
        ("https://0.0.0.0/", "unspecified address", "unspecified address"),
        ("https://240.0.0.1/", "reserved address", "reserved address"),
        # other spellings of an IPv4 address the resolver would accept
        ("http://2130706433/", "four decimal numbers", "four decimal numbers"),
        ("http://0x7f.1/", "four decimal numbers", "four decimal numbers"),
        ("http://0x7f000001/", "four decimal numbers", "four decimal numbers"),
        ("http://017700000001/", "four decimal numbers", "four decimal numbers"),
        ("http://127.1/", "four decimal numbers", "four decimal numbers"),
        ("https://0177.0.0.1/", "four decimal numbers", "four decimal numbers"),
        # names that are loopback or metadata by definition
        ("https://localhost/", "localhost is a loopback name", "loopback name"),
        ("https://localhost./", "localhost is a loopback name", "loopback name"),
        ("https://api.localhost/", "loopback name", "loopback name"),
        ("https://metadata.google.internal/", "cloud metadata name", "cloud metadata name"),
        # userinfo and parser tricks
        ("http://allowed.example@127.0.0.1/", "credentials", "credentials"),
        ("https://user:pw@ci.example.com/", "credentials", "credentials"),
        ("http://ci.internal\\@127.0.0.1/", "backslashes", "backslashes"),
        ("https://ci.example.com\t/", "whitespace", "whitespace"),
        ("ftp://ci.example.com/", "absolute http(s) URL", "absolute http(s) URL"),
        ("https:///nohost", "absolute http(s) URL", "absolute http(s) URL"),
    ],
)
def test_url_refusals(url: str, public_only: str | None, allowing: str | None) -> None:
    for policy, expected in ((PUBLIC_ONLY, public_only), (ALLOWING, allowing)):
        refusal = policy.url_refusal(url)
        if expected is None:
            assert refusal is None, (policy, url)
        else:
            assert refusal is not None, (policy, url)
            assert expected in refusal, (policy, url, refusal)


def test_a_refusal_says_how_to_allow_it() -> None:
    refusal = PUBLIC_ONLY.url_refusal("http://10.0.0.5:8500/")
    assert refusal == (
        "refused by the egress policy: 10.0.0.5 is a private address; "
        "allow it in QUORUM_EGRESS_ALLOW"
    )


def test_metadata_needs_its_exact_address_even_inside_an_allowed_range() -> None:
    assert EgressPolicy.parse("169.254.0.0/16").url_refusal("https://169.254.169.254/") is not None
    assert EgressPolicy.parse("169.254.0.0/16").url_refusal("https://169.254.1.1/") is None
    assert EgressPolicy.parse("169.254.169.254").url_refusal("http://169.254.169.254/") is None


@pytest.mark.parametrize(
    ("text", "hosts", "wildcards", "networks"),
    [
        ("", set(), (), ()),
        ("  ", set(), (), ()),
        ("ci.example.com", {"ci.example.com"}, (), ()),
        ("CI.Example.com.", {"ci.example.com"}, (), ()),
        ("*.corp.example, a.b", {"a.b"}, (".corp.example",), ()),
        ("10.1.0.0/16 127.0.0.1", set(), (), ("10.1.0.0/16", "127.0.0.1/32")),
        ("[::1],fd00::/8", set(), (), ("::1/128", "fd00::/8")),
    ],
)
def test_parse(
    text: str, hosts: set[str], wildcards: tuple[str, ...], networks: tuple[str, ...]
) -> None:
    policy = EgressPolicy.parse(text)
    assert policy.hosts == hosts
    assert policy.wildcards == wildcards
    assert tuple(str(n) for n in policy.networks) == networks


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.1.0.1/16", "'10.1.0.1/16' is not a valid CIDR"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("ci.example.com:8080", "is not a host name"),
        ("https://ci.example.com", "is a URL; list its host name only"),
        ("*", "is not a host name"),
        ("*.", "is not a host name"),
        ("a..b", "is not a host name"),
        ("-bad.example", "is not a host name"),
    ],
)
def test_parse_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(EgressConfigError) as caught:
        EgressPolicy.parse(f"ok.example {text}")
    assert message in str(caught.value)


def test_settings_name_a_bad_allow_list() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"QUORUM_EGRESS_ALLOW": "10.0.0.1/8"})
    assert caught.value.problems == [
        "QUORUM_EGRESS_ALLOW: '10.0.0.1/8' is not a valid CIDR (10.0.0.1/8 has host bits set)"
    ]
    allowed = load_settings({"QUORUM_EGRESS_ALLOW": "*.corp.example, 10.0.0.0/8"})
    assert allowed.egress_policy.url_refusal("http://a.corp.example/") is None
    assert load_settings({}).egress_policy == PUBLIC_ONLY


@pytest.mark.parametrize(
    "env",
    [
        {"JENKINS_USER": "quorum", "JENKINS_API_TOKEN": "11aa22bb33cc44dd"},
        {"JENKINS_USER": "quorum"},
        {"JENKINS_API_TOKEN": "11aa22bb33cc44dd"},
    ],
)
def test_jenkins_credentials_require_jenkins_url(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    [problem] = caught.value.problems
    assert problem.startswith("JENKINS_URL: required when JENKINS_USER or JENKINS_API_TOKEN")
    assert "11aa22bb33cc44dd" not in problem
    pinned = load_settings({**env, "JENKINS_URL": "https://jenkins.example.com/"})
    assert pinned.jenkins_url == "https://jenkins.example.com/"


# --- Connect time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "name", "addresses", "kept", "refusal"),
    [
        (PUBLIC_ONLY, "callbacks.example.com", ["93.184.216.34"], ["93.184.216.34"], None),
        (PUBLIC_ONLY, "callbacks.example.com", ["127.0.0.1"], [], "resolves to a loopback"),
        (PUBLIC_ONLY, "callbacks.example.com", ["10.0.0.5"], [], "resolves to a private"),
        (PUBLIC_ONLY, "callbacks.example.com", ["::ffff:127.0.0.1"], [], "loopback"),
        (PUBLIC_ONLY, "callbacks.example.com", ["169.254.169.254"], [], "cloud metadata"),
        # a rebinding answer mixing a public and a private address: only the public one is kept
        (PUBLIC_ONLY, "mixed.example.com", ["10.0.0.5", "93.184.216.34"], ["93.184.216.34"], None),
        # a listed name may resolve to a private address; a listed range admits any name
        (ALLOWING, "ci.internal", ["10.9.9.9"], ["10.9.9.9"], None),
        (ALLOWING, "x.corp.example", ["192.168.1.1"], ["192.168.1.1"], None),
        (ALLOWING, "callbacks.example.com", ["10.1.0.7"], ["10.1.0.7"], None),
        (ALLOWING, "callbacks.example.com", ["10.2.0.7"], [], "resolves to a private"),
        (ALLOWING, "ci.internal", ["169.254.169.254"], [], "cloud metadata"),
    ],
)
async def test_the_resolver_checks_every_resolved_address(
    policy: EgressPolicy,
    name: str,
    addresses: list[str],
    kept: list[str],
    refusal: str | None,
) -> None:
    resolver = EgressResolver(policy, FakeDns({name: addresses}))
    if refusal is None:
        results = await resolver.resolve(name, 443)
        assert [r["host"] for r in results] == kept
    else:
        with pytest.raises(EgressRefused) as caught:
            await resolver.resolve(name, 443)
        assert refusal in caught.value.reason
        assert name in caught.value.reason
        for address in addresses:  # the address it resolved to is not echoed
            assert address not in caught.value.reason


@pytest.mark.parametrize(
    ("status", "ok", "permanent", "detail"),
    [
        (200, True, False, "HTTP 200"),
        (204, True, False, "HTTP 204"),
        (
            302,
            False,
            True,
            "receiver answered with a redirect (HTTP 302); Quorum does not follow redirects "
            "(permanent, not retried)",
        ),
        (307, False, True, "redirect (HTTP 307)"),
        (400, False, True, "receiver refused the callback (HTTP 400) (permanent, not retried)"),
        (404, False, True, "receiver refused the callback (HTTP 404)"),
        (410, False, True, "receiver refused the callback (HTTP 410)"),
        (408, False, False, "receiver is unavailable (HTTP 408)"),
        (425, False, False, "receiver is unavailable (HTTP 425)"),
        (429, False, False, "receiver asked to slow down (HTTP 429)"),
        (500, False, False, "receiver is unavailable (HTTP 500)"),
        (503, False, False, "receiver is unavailable (HTTP 503)"),
    ],
)
def test_a_receivers_answer_is_its_status_code(
    status: int, ok: bool, permanent: bool, detail: str
) -> None:
    result = callback_result(status)
    assert (result.ok, result.permanent) == (ok, permanent)
    assert detail in result.detail


# --- Credentials stay home: GitLab ----------------------------------------------------------


async def test_gitlab_sends_its_token_to_gitlab_url_only_whatever_the_hook_names() -> None:
    """A Deployment Hook names its project's URLs (web_url, job and commit links); the API call
    carrying GITLAB_TOKEN is built from GITLAB_URL and the project's numeric id alone."""
    hook_token = "gitlab-hook-token"
    async with (
        FakeGitLab() as gitlab,
        FakeGitLab() as elsewhere,
        aiohttp.ClientSession() as http,
    ):
        adapter = GitLabAdapter(
            TokenVerifier([hook_token], header="X-Gitlab-Token"),
            lambda: http,
            gitlab_url=gitlab.base_url,
            api_token=GITLAB_API_TOKEN,
        )
        event = json.loads((FIXTURES / "gitlab" / "deployment_event.json").read_text())
        other = f"{elsewhere.base_url}/api/v4/projects/30"
        event.update(
            status="blocked",
            environment="production",
            deployable_url=f"{other}/deployments/15/approval",
            commit_url=f"{other}/deployments/15/approval",
        )
        event["project"] = {**event["project"], "web_url": other, "url": other, "http_url": other}
        headers = {"X-Gitlab-Token": hook_token, "X-Gitlab-Event": "Deployment Hook"}
        inbound = adapter.parse(json.dumps(event).encode(), headers)
        assert isinstance(inbound, InboundRequest)
        request = a_request(
            source="gitlab",
            callback=inbound.callback,
            state=RequestState.APPROVED,
            decided_at=NOW,
        )
        payload = adapter.delivery_payload(request, [])
        result = await adapter.deliver(
            Delivery("dlv-1", "req-1", "gitlab", payload, created_at=NOW, next_attempt_at=NOW)
        )
        assert result.ok, result
        [call] = gitlab.recorded
        assert call.path == "/api/v4/projects/30/deployments/15/approval"
        assert (elsewhere.recorded, elsewhere.refused) == ([], [])


_BASE = "https://jenkins.example.com/ci/"


@pytest.mark.parametrize(
    ("url", "under"),
    [
        (_BASE + "job/deploy/7/input/Q/", True),
        ("https://jenkins.example.com/ci", True),
        ("HTTPS://Jenkins.Example.com./ci/job/a/", True),
        ("https://jenkins.example.com:443/ci/job/a/", True),
        (_BASE + "../other-app/", False),  # yarl resolves it to /other-app/ before sending
        (_BASE + "job/../../other-app/", False),
        (_BASE + "./job/", False),
        (_BASE + "%2e%2e/other-app/", False),
        (_BASE + "%2E%2e/other-app/", False),
        (_BASE + "job%2f..%2fother/", False),
        (_BASE + "job\\..\\other/", False),
        ("https://jenkins.example.com/ciX/job/", False),
        ("https://jenkins.example.com/other/ci/", False),
        ("http://jenkins.example.com/ci/job/", False),
        ("https://jenkins.example.com:8443/ci/job/", False),
        ("https://user:pw@jenkins.example.com/ci/job/", False),
        ("https://jenkins.example.com.evil.example/ci/job/", False),
        ("https://jenkins.example.com:99999/ci/job/", False),
        ("/ci/job/", False),
    ],
)
def test_url_under_resolves_what_the_client_would_send(url: str, under: bool) -> None:
    assert url_under(url, _BASE) is under
