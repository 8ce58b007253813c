"""Clean text: control characters are refused wherever text comes in, and "required" text is
judged on what a reader can see (zero-width characters are not a reason or a ticket)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.domain.eligibility import RefusalCode, check_vote
from bot.domain.model import (
    ApprovalRequest,
    RejectMode,
    RequestDetails,
    Requester,
    RequestState,
    Risk,
    Rule,
    VoteKind,
)
from bot.domain.text import (
    control_character,
    control_character_message,
    control_character_refusal,
    is_blank,
    visible,
)
from bot.pipelines import generic, github, gitlab
from bot.pipelines.base import InvalidPayload
from tests.fakes.github_payloads import protection_rule
from tests.paths import FIXTURES

NOW = datetime(2026, 5, 5, 12, tzinfo=UTC)
ZWSP = "\u200b"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("plain text", None),
        ("tabs\tnewlines\nand\r\nreturns", None),
        ("zero\u200bwidth and émoji 🚀", None),
        ("\x00", "U+0000 at position 0"),
        ("ab\x07c", "U+0007 at position 2"),
        ("escape \x1b[31m", "U+001B at position 7"),
        ("del\x7f", "U+007F at position 3"),
        ("c1 \x85", "U+0085 at position 3"),
    ],
)
def test_control_character(text: str, found: str | None) -> None:
    assert control_character(text) == found
    message = control_character_message(text)
    assert message == (None if found is None else f"must not contain control characters ({found})")


def test_control_character_refusal_names_what_and_says_nothing_changed() -> None:
    assert control_character_refusal("The reason", None) is None
    assert control_character_refusal("The reason", "fine") is None
    assert control_character_refusal("The reason", "bad\x00") == (
        "The reason must not contain control characters (U+0000 at position 3); "
        "nothing was changed."
    )


@pytest.mark.parametrize(
    ("text", "blank"),
    [
        (None, True),
        ("", True),
        ("   \t\n", True),
        (ZWSP, True),
        (ZWSP * 2, True),
        ("\u200d\ufeff\u2060\u200e \u200f", True),
        ("x", False),
        (f"{ZWSP}CHG-1{ZWSP}", False),
    ],
)
def test_is_blank_after_removing_invisible_characters(text: str | None, blank: bool) -> None:
    assert is_blank(text) is blank


def test_visible_keeps_what_a_reader_sees() -> None:
    assert visible(f" {ZWSP}CHG-{ZWSP}1 ") == "CHG-1"


# --- votes ----------------------------------------------------------------------------------


def _request() -> ApprovalRequest:
    return ApprovalRequest(
        id="req_1",
        source="generic",
        service="storefront",
        environment="production",
        risk=Risk.MEDIUM,
        owner_team="web",
        channel="C0WEB",
        rules=(Rule(name="owner-review", team="web", approvals=1),),
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(slack_user="U0REQ"),
        details=RequestDetails(),
        created_at=NOW,
        state=RequestState.PENDING,
    )


@pytest.mark.parametrize(
    ("kind", "reason", "message"),
    [
        (
            VoteKind.REJECT,
            ZWSP * 2,
            "A rejection needs a reason: say what is wrong so the requester knows what to fix.",
        ),
        (
            VoteKind.REJECT,
            "broken\x00",
            "The reason must not contain control characters (U+0000 at position 6); "
            "nothing was changed.",
        ),
        (
            VoteKind.APPROVE,
            "looks good\x1b",
            "The reason must not contain control characters (U+001B at position 10); "
            "nothing was changed.",
        ),
    ],
)
def test_a_reason_is_refused_before_it_is_recorded(
    kind: VoteKind, reason: str, message: str
) -> None:
    refusal = check_vote(
        _request(),
        [],
        {"web": frozenset({"U0WEB1"})},
        voter="U0WEB1",
        kind=kind,
        now=NOW,
        reason=reason,
    )
    assert refusal is not None
    assert refusal.code is RefusalCode.REASON_REQUIRED
    assert refusal.message == message


def test_a_visible_reason_passes() -> None:
    refusal = check_vote(
        _request(),
        [],
        {"web": frozenset({"U0WEB1"})},
        voter="U0WEB1",
        kind=VoteKind.REJECT,
        now=NOW,
        reason=f"{ZWSP}tests fail",
    )
    assert refusal is None


# --- webhook bodies -------------------------------------------------------------------------


def _fields(parse: Any, body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidPayload) as caught:
        parse(json.dumps(body).encode())
    return {e.field: e.message for e in caught.value.errors}


NUL = "must not contain control characters (U+0000 at position 1)"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"service": "s\x00"}, "service"),
        ({"environment": "p\x00"}, "environment"),
        ({"version": "v\x00"}, "version"),
        ({"sha": "a\x00"}, "sha"),
        ({"title": "t\x00"}, "title"),
        ({"description": "d\x00"}, "description"),
        ({"change_ticket": "C\x00"}, "change_ticket"),
        ({"repository": "r\x00"}, "repository"),
        ({"requested_by": {"github": "o\x00"}}, "requested_by.github"),
        ({"requested_by": {"email": "a\x00@example.com"}}, "requested_by.email"),
        (
            {
                "links": [
                    {"url": "https://ci.example.com/1"},
                    {"text": "x\x00", "url": "https://x.example"},
                ]
            },
            "links[1].text",
        ),
        ({"links": [{"url": "h\x00ttps://ci.example.com/1"}]}, "links[0].url"),
        ({"callback_url": "h\x00ttps://ci.example.com/cb"}, "callback_url"),
        ({"jenkins": {"input_url": "h\x00ttps://ci.example.com/i"}}, "jenkins.input_url"),
    ],
)
def test_generic_body_refuses_control_characters_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    body = {"service": "storefront", "environment": "production", **changes}
    assert _fields(generic.parse_body, body) == {field: NUL}


def test_generic_body_refuses_a_control_character_that_would_strip_to_nothing() -> None:
    # U+001F and U+000B are whitespace to str.strip(): refused, not read as "absent".
    body = {"service": "storefront", "environment": "production", "title": "\x1f", "sha": "\x0b"}
    assert _fields(generic.parse_body, body) == {
        "title": "must not contain control characters (U+001F at position 0)",
        "sha": "must not contain control characters (U+000B at position 0)",
    }


def test_generic_body_reads_invisible_optional_text_as_absent() -> None:
    body = {"service": "storefront", "environment": "production", "change_ticket": ZWSP}
    assert generic.parse_body(json.dumps(body).encode()).change_ticket is None


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("environment",), "environment"),
        (("ref",), "ref"),
        (("sha",), "sha"),
        (("event",), "event"),
        (("deployment", "ref"), "deployment.ref"),
        (("repository", "full_name"), "repository.full_name"),
        (("sender", "login"), "sender.login"),
    ],
)
def test_github_body_refuses_control_characters_naming_the_field(
    path: tuple[str, ...], field: str
) -> None:
    payload = protection_rule("https://api.github.com/x", with_sha_ref=True)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = f"{node[path[-1]]}\x00"
    errors = _fields(github.parse_body, payload)
    assert list(errors) == [field]
    assert errors[field].startswith("must not contain control characters (U+0000 at position ")


def test_github_pull_request_titles_are_checked() -> None:
    payload = protection_rule("https://api.github.com/x")
    payload["pull_requests"] = [
        {"number": 7, "html_url": "https://github.com/acme/storefront/pull/7", "title": "a\x00"}
    ]
    assert _fields(github.parse_body, payload) == {"pull_requests[0].title": NUL}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("environment",), "environment"),
        (("commit_title",), "commit_title"),
        (("short_sha",), "short_sha"),
        (("user", "username"), "user.username"),
        (("project", "path_with_namespace"), "project.path_with_namespace"),
    ],
)
def test_gitlab_body_refuses_control_characters_naming_the_field(
    path: tuple[str, ...], field: str
) -> None:
    payload: dict[str, Any] = json.loads(
        (FIXTURES / "gitlab" / "deployment_event.json").read_text()
    )
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = f"{node[path[-1]]}\x00"
    errors = _fields(gitlab.parse_body, payload)
    assert list(errors) == [field]
    assert errors[field].startswith("must not contain control characters (U+0000 at position ")
