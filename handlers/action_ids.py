"""Identifiers shared by the cards we render and the listeners that receive their clicks, and the
codec of the small versioned JSON a button (or modal) carries: `{"v":1,"request":"…"}`."""

from __future__ import annotations

import json
from enum import StrEnum

# Slack caps a button's `value` at 2000 characters (and a view's private_metadata at 3000).
MAX_BUTTON_VALUE = 2000
BUTTON_VALUE_VERSION = 1


class ActionId(StrEnum):
    """`action_id` of the card's buttons."""

    approve = "quorum.approve"
    reject = "quorum.reject"
    break_glass = "quorum.break_glass"


class CallbackId(StrEnum):
    """`callback_id` of our modals."""

    reject_reason = "quorum.reject_reason"
    break_glass_reason = "quorum.break_glass_reason"


class BlockId(StrEnum):
    """`block_id` of blocks a listener reads back (view submissions) or targets."""

    actions = "quorum.actions"
    reason = "quorum.reason"


# The `action_id` of the reason input inside BlockId.reason: the submitted text is at
# view["state"]["values"][BlockId.reason][REASON_ACTION_ID]["value"].
REASON_ACTION_ID = "quorum.reason_input"


def encode_button_value(request_id: str) -> str:
    """The compact JSON a button carries: `{"v":1,"request":"<id>"}`."""
    if not request_id:
        raise ValueError("request id is empty")
    value = json.dumps({"v": BUTTON_VALUE_VERSION, "request": request_id}, separators=(",", ":"))
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(f"button value would exceed {MAX_BUTTON_VALUE} characters")
    return value


def decode_button_value(value: str) -> str:
    """The request id of a button value; ValueError for anything but a version-1 value."""
    if not isinstance(value, str):
        raise ValueError(f"button value must be a string, got {type(value).__name__}")
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(f"button value longer than {MAX_BUTTON_VALUE} characters")
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"button value is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("button value is not a JSON object")
    version = data.get("v")
    # bool is an int subclass: `true` must not pass for version 1.
    if type(version) is not int or version != BUTTON_VALUE_VERSION:
        raise ValueError(f"unsupported button value version {version!r}")
    if set(data) != {"v", "request"}:
        raise ValueError(f"unexpected keys in button value: {sorted(data)}")
    request_id = data["request"]
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("button value has no request id")
    return request_id
