"""Block Kit rendering: buttons only while pending, Slack's size limits, escaping, progress text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain import mrkdwn
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
from bot.domain.mrkdwn import md
from bot.domain.quorum import RuleProgress, Tally
from handlers.action_ids import (
    REASON_ACTION_ID,
    ActionId,
    BlockId,
    CallbackId,
    decode_button_value,
    encode_button_value,
)
from handlers.blocks import (
    CardMessage,
    _truncate,
    escape_mrkdwn,
    progress_line,
    reject_reason_modal,
    render_card,
    render_decision_reply,
    render_vote_replies,
    render_vote_reply,
)

NOW = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
OWNER = Rule("owner-review", "payments", 2, "environment")
SRE = Rule("sre-signoff", "sre", 1, "risk:high")


def make_request(**changes: Any) -> ApprovalRequest:
    request = ApprovalRequest(
        id="req_01HX",
        source="generic",
        service="payments-api",
        environment="production",
        risk=Risk.HIGH,
        owner_team="payments",
        channel="C0PAY",
        rules=(OWNER, SRE),
        reject_mode=RejectMode.ANY,
        self_approval=False,
        requester=Requester(email="dev@example.com", slack_user="UREQ"),
        details=RequestDetails(
            version="v1.4.2",
            sha="0123456789abcdef0123456789abcdef01234567",
            title="Release 1.4.2",
            description="Fixes the refund rounding bug.",
            change_ticket="CHG-1234",
            links=(Link("Build", "https://ci.example.com/build/1?a=1&b=2"),),
        ),
        created_at=NOW - timedelta(minutes=10),
    )
    for key, value in changes.items():
        setattr(request, key, value)
    return request


def approve(voter: str, rule: str, actor: str | None = None) -> Vote:
    return Vote("req_01HX", voter, VoteKind.APPROVE, NOW, actor=actor, rule=rule)


def reject(voter: str, reason: str, actor: str | None = None) -> Vote:
    return Vote("req_01HX", voter, VoteKind.REJECT, NOW, reason=reason, actor=actor)


def make_tally(
    owner: tuple[str, ...] = (),
    sre: tuple[str, ...] = (),
    approvals: tuple[Vote, ...] = (),
    rejections: tuple[Vote, ...] = (),
    outcome: RequestState | None = None,
) -> Tally:
    return Tally(
        rules=(RuleProgress(OWNER, owner), RuleProgress(SRE, sre)),
        approvals=approvals,
        rejections=rejections,
        outcome=outcome,
    )


# --- a validator of Block Kit limits --------------------------------------------------------------


def _texts(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, text) string under a `text` key of a composition object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield path, value
            else:
                yield from _texts(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _texts(item, f"{path}[{index}]")


def assert_block_kit_limits(blocks: list[dict[str, Any]]) -> None:
    """Fail on anything Slack would reject as too long or too many."""
    assert len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert len(block["text"]["text"]) <= 150
        elif kind == "section":
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            fields = block.get("fields", [])
            assert len(fields) <= 10
            for item in fields:
                assert len(item["text"]) <= 2000
            assert "text" in block or fields
        elif kind == "actions":
            assert 0 < len(block["elements"]) <= 25
            action_ids = [e["action_id"] for e in block["elements"]]
            assert len(set(action_ids)) == len(action_ids)
            for element in block["elements"]:
                assert element["type"] == "button"
                assert len(element["text"]["text"]) <= 75
                assert len(element["value"]) <= 2000
                assert len(element["action_id"]) <= 255
                assert element.get("style") in (None, "primary", "danger")
        elif kind == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                assert len(element["text"]) <= 3000
        elif kind == "input":
            assert len(block["label"]["text"]) <= 2000
        else:
            pytest.fail(f"unexpected block type {kind}")
        if "block_id" in block:
            assert len(block["block_id"]) <= 255
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(set(block_ids)) == len(block_ids)
    for path, text in _texts(blocks):
        assert len(text) <= 3000, path


def _mrkdwn_texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            yield node["text"]
        for value in node.values():
            yield from _mrkdwn_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _mrkdwn_texts(item)


def _actions(card: CardMessage) -> list[dict[str, Any]]:
    return [e for b in card.blocks if b["type"] == "actions" for e in b["elements"]]


def _all_text(card: CardMessage) -> str:
    return "\n".join(text for _, text in _texts(card.blocks))


# --- the card -----------------------------------------------------------------------------------


def test_pending_card_has_approve_and_reject_with_decodable_values() -> None:
    card = render_card(make_request(), make_tally(), [], now=NOW)

    assert_block_kit_limits(card.blocks)
    buttons = {b["action_id"]: b for b in _actions(card)}
    assert set(buttons) == {ActionId.approve, ActionId.reject}
    assert buttons[ActionId.approve]["style"] == "primary"
    assert buttons[ActionId.reject]["style"] == "danger"
    for button in buttons.values():
        assert decode_button_value(button["value"]) == "req_01HX"
    assert card.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "payments-api → production v1.4.2", "emoji": True},
    }
    assert card.blocks[-1]["type"] == "context"
    assert "req_01HX" in card.blocks[-1]["elements"][0]["text"]
    assert "generic" in card.blocks[-1]["elements"][1]["text"]
    assert "payments-api" in card.text


def test_fields_show_requester_ticket_risk_and_short_sha() -> None:
    card = render_card(make_request(), make_tally(), [], now=NOW)

    fields = next(b["fields"] for b in card.blocks if "fields" in b)
    assert [f["text"] for f in fields] == [
        "*Requested by*\n<@UREQ>",
        "*Change ticket*\nCHG-1234",
        "*Risk*\nhigh",
        "*SHA*\n`0123456789ab`",
    ]


@pytest.mark.parametrize(
    "state", [RequestState.APPROVED, RequestState.REJECTED, RequestState.EXPIRED]
)
def test_decided_card_has_no_buttons(state: RequestState) -> None:
    request = make_request(state=state, decided_at=NOW)
    card = render_card(request, make_tally(("U1", "U2"), ("U3",)), [], now=NOW)

    assert _actions(card) == []
    assert_block_kit_limits(card.blocks)


def test_approved_card_states_time_of_decision() -> None:
    request = make_request(state=RequestState.APPROVED, decided_at=NOW.replace(hour=14, minute=2))
    card = render_card(request, make_tally(("U1", "U2"), ("U3",)), [], now=NOW)

    assert ":white_check_mark: *Approved* at 14:02 UTC" in _all_text(card)


def test_rejected_card_names_rejector_and_reason() -> None:
    vote = reject("U9", "tests <failing> & flaky")
    request = make_request(state=RequestState.REJECTED, decided_at=NOW)
    card = render_card(request, make_tally(rejections=(vote,)), [vote], now=NOW)

    assert ":x: *Rejected* by <@U9> at 14:05 UTC — tests &lt;failing&gt; &amp; flaky" in (
        _all_text(card)
    )


def test_progress_line_format() -> None:
    # The service is owned by the SRE team, so both unmet rules wait on sre.
    owner = Rule("owner-review", "sre", 2)
    tally = Tally(
        rules=(RuleProgress(owner, ("U1",)), RuleProgress(SRE, ())),
        approvals=(approve("U1", "owner-review"),),
        rejections=(),
        outcome=None,
    )
    assert progress_line(tally) == "owner-review 1/2 · sre-signoff 0/1 — waiting on sre"

    card = render_card(make_request(rules=(owner, SRE)), tally, tally.approvals, now=NOW)
    text = _all_text(card)
    assert "*Approvals:* owner-review 1/2 · sre-signoff 0/1 — waiting on sre" in text
    assert "• owner-review: approved by <@U1>" in text


def test_progress_line_names_every_team_still_needed() -> None:
    tally = make_tally(owner=("U1",))
    assert progress_line(tally) == ("owner-review 1/2 · sre-signoff 0/1 — waiting on payments, sre")
    assert progress_line(make_tally(("U1", "U2"), ("U3",))) == (
        "owner-review 2/2 · sre-signoff 1/1"
    )


def test_delegated_vote_is_shown_on_behalf_of_the_delegator() -> None:
    votes = [approve("UALICE", "owner-review", actor="UBOB")]
    card = render_card(make_request(), make_tally(owner=("UALICE",)), votes, now=NOW)

    assert "approved by <@UBOB> on behalf of <@UALICE>" in _all_text(card)


def test_long_description_is_truncated_within_every_limit() -> None:
    details = replace(
        make_request().details,
        description="x" * 10_000,
        title="T" * 5_000,
        change_ticket="C" * 5_000,
        version="9" * 500,
        links=tuple(Link("L" * 300, f"https://example.com/{i}") for i in range(100)),
    )
    warnings = ["w" * 4000] * 3
    request = make_request(details=details, service="s" * 400, id="r" * 300)
    card = render_card(
        request,
        make_tally(),
        [],
        warnings=warnings,
        callback_status="c" * 5000,
        next_timer="n" * 5000,
        now=NOW,
    )

    assert_block_kit_limits(card.blocks)
    description = next(b for b in card.blocks if "xxxxx" in b.get("text", {}).get("text", ""))
    assert description["text"]["text"].endswith("… _(truncated)_")
    assert len(description["text"]["text"]) == 3000
    assert "more" in _all_text(card)  # links that did not fit are counted, not cut in half


def test_truncation_never_leaves_half_an_entity() -> None:
    text = escape_mrkdwn("a" * 2990 + "&" * 50)
    cut = _truncate(text, 3000, "…")
    assert len(cut) <= 3000
    body = cut.removesuffix("…")
    assert body.endswith("&amp;")


def test_user_text_is_escaped() -> None:
    details = replace(
        make_request().details,
        title="<!channel> deploy now",
        description="see <https://evil.example|click> & <@U0ADMIN>",
        change_ticket="<!here>",
        links=(Link("<!everyone>", "javascript:alert(1)"),),
    )
    request = make_request(details=details, service="<!channel>")
    card = render_card(request, make_tally(), [], now=NOW)

    # plain_text (header, buttons) is never parsed for mentions; mrkdwn and the fallback text are.
    text = "\n".join([*_mrkdwn_texts(card.blocks), card.text])
    for forged in ("<!channel>", "<!here>", "<!everyone>", "<https://evil", "<@U0ADMIN>"):
        assert forged not in text
    assert "&lt;!channel&gt; deploy now" in text
    assert "&amp;" in text
    assert "javascript:" not in text  # not a link: only http(s) URLs become links


def test_links_render_as_mrkdwn_links_with_escaped_ampersands() -> None:
    card = render_card(make_request(), make_tally(), [], now=NOW)

    assert "<https://ci.example.com/build/1?a=1&amp;b=2|Build>" in _all_text(card)


def test_warning_keeps_quorum_markup_but_not_forged_mentions() -> None:
    warning = md(
        ":warning: *No owner*: service {} is not in the policy; routed to {}",
        "'<!channel>'",
        mrkdwn.channel("C0DEF"),
    )
    card = render_card(make_request(service=None), make_tally(), [], warnings=[warning], now=NOW)

    text = _all_text(card)
    assert card.blocks[0]["text"]["text"] == "unknown service → production v1.4.2"
    assert (
        ":warning: *No owner*: service '&lt;!channel&gt;' is not in the policy; routed to <#C0DEF>"
        in text
    )


def test_frozen_card_has_no_approve_button_and_offers_break_glass() -> None:
    card = render_card(
        make_request(),
        make_tally(),
        [],
        frozen_note=md("Frozen until Mon 09:00 by {}: quarter-end close", mrkdwn.user("URM")),
        now=NOW,
    )

    assert [b["action_id"] for b in _actions(card)] == [ActionId.reject, ActionId.break_glass]
    assert ":snowflake: Frozen until Mon 09:00 by <@URM>: quarter-end close" in _all_text(card)


def test_timer_and_callback_status_lines() -> None:
    request = make_request(state=RequestState.APPROVED, decided_at=NOW - timedelta(days=1))
    card = render_card(
        request,
        make_tally(("U1", "U2"), ("U3",)),
        [],
        callback_status="retrying, attempt 4: HTTP 503",
        next_timer="escalates to sre in 42 min",
        now=NOW,
    )

    text = _all_text(card)
    assert "Approved* at 2026-03-01 14:05 UTC" in text
    assert ":satellite_antenna: Callback: retrying, attempt 4: HTTP 503" in text
    assert "escalates" not in text  # timers only matter while pending


def test_pending_rejection_in_quorum_mode_is_listed() -> None:
    vote = reject("U7", "not yet")
    card = render_card(make_request(), make_tally(rejections=(vote,)), [vote], now=NOW)

    assert ":x: <@U7> rejected — not yet" in _all_text(card)
    assert len(_actions(card)) == 2


# --- replies and the modal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vote", "expected"),
    [
        (approve("U1", "owner-review"), ":white_check_mark: <@U1> approved (owner-review)"),
        (
            approve("UALICE", "owner-review", actor="UBOB"),
            ":white_check_mark: <@UBOB> approved on behalf of <@UALICE> (owner-review)",
        ),
        (reject("U2", "broken <b>"), ":x: <@U2> rejected: broken &lt;b&gt;"),
        (
            reject("UALICE", "nope", actor="UBOB"),
            ":x: <@UBOB> rejected on behalf of <@UALICE>: nope",
        ),
    ],
)
def test_vote_reply(vote: Vote, expected: str) -> None:
    assert render_vote_reply(vote) == expected


def test_vote_replies_list_the_votes_a_line_each_in_order() -> None:
    votes = [approve("U1", "owner-review"), reject("U2", "line one\nline two")]
    assert render_vote_replies(votes).split("\n")[:2] == [
        ":white_check_mark: <@U1> approved (owner-review)",
        ":x: <@U2> rejected: line one",
    ]
    assert render_vote_replies(votes[:1]) == render_vote_reply(votes[0])
    with pytest.raises(ValueError, match="no votes"):
        render_vote_replies([])


def test_decision_reply_for_approval_and_rejection() -> None:
    approved = make_request(state=RequestState.APPROVED, decided_at=NOW)
    text = render_decision_reply(approved, make_tally(("U1", "U2"), ("U3",)))
    assert text.startswith(":white_check_mark: *Approved* (owner-review 2/2 · sre-signoff 1/1)")
    assert "<@UREQ>" in text

    vote = reject("U9", "bad")
    rejected = make_request(state=RequestState.REJECTED, decided_at=NOW)
    assert render_decision_reply(rejected, make_tally(rejections=(vote,))).startswith(
        ":x: *Rejected* by <@U9>: bad."
    )


def test_reject_reason_modal() -> None:
    view = reject_reason_modal("req_01HX", "payments-api → production <v1>")

    assert view["type"] == "modal"
    assert view["callback_id"] == CallbackId.reject_reason
    assert decode_button_value(view["private_metadata"]) == "req_01HX"
    assert view["submit"]["text"] == "Reject"
    assert view["close"]["text"] == "Cancel"
    assert len(view["title"]["text"]) <= 24
    assert "&lt;v1&gt;" in view["blocks"][0]["text"]["text"]
    reason = next(b for b in view["blocks"] if b["type"] == "input")
    assert reason["block_id"] == BlockId.reason
    assert reason["optional"] is False
    element = reason["element"]
    assert element["action_id"] == REASON_ACTION_ID
    assert element["type"] == "plain_text_input"
    assert (element["multiline"], element["min_length"], element["max_length"]) == (True, 3, 1000)
    assert_block_kit_limits(view["blocks"])
    json.dumps(view)  # must be serialisable for views.open


# --- the button value codec ---------------------------------------------------------------------


def test_button_value_round_trip_and_wire_format() -> None:
    assert encode_button_value("req_1") == '{"v":1,"request":"req_1"}'
    assert decode_button_value('{"v": 1, "request": "req_1"}') == "req_1"


@pytest.mark.parametrize(
    "value",
    [
        "req_1",
        "",
        "[1]",
        '{"v":2,"request":"req_1"}',
        '{"v":true,"request":"req_1"}',
        '{"v":"1","request":"req_1"}',
        '{"v":1}',
        '{"v":1,"request":""}',
        '{"v":1,"request":7}',
        '{"v":1,"request":"r","extra":1}',
        '{"v":1,"request":"' + "r" * 2000 + '"}',
    ],
)
def test_decode_rejects_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        decode_button_value(value)


def test_encode_refuses_values_slack_would_reject() -> None:
    with pytest.raises(ValueError, match="2000"):
        encode_button_value("r" * 2000)


def test_plain_text_notes_are_escaped_whole_even_their_mentions() -> None:
    # A note that is a plain str did not come through bot/domain/mrkdwn.py: a `<@U…>` or a
    # link in it could be a pipeline's text, so it mentions nobody.
    card = render_card(
        make_request(),
        make_tally(),
        [],
        warnings=["deployed by <@U0ADMIN> <!here>"],
        callback_status="HTTP 400: <https://evil.example|approve here>",
        next_timer="escalates to <!subteam^S0SRE>",
        now=NOW,
    )

    text = "\n".join([*_mrkdwn_texts(card.blocks), card.text])
    for forged in ("<@U0ADMIN>", "<!here>", "<https://evil", "<!subteam"):
        assert forged not in text
    assert "deployed by &lt;@U0ADMIN&gt; &lt;!here&gt;" in text


def test_mentions_render_only_for_well_formed_user_ids() -> None:
    votes = [approve("U0WEB1", "owner-review"), approve("!channel", "owner-review")]
    card = render_card(make_request(), make_tally(owner=("U0WEB1", "!channel")), votes, now=NOW)

    text = _all_text(card)
    assert "<@U0WEB1>" in text
    assert "<@!channel>" not in text
    assert "<!channel>" not in text
