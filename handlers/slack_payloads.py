"""Typed models of what Quorum reads from signed Slack requests, checked before any listener runs.

Only the fields Quorum reads are modelled, with strict types (a number is not a string, a list is
not a string); Slack adds fields over time, so any other field is allowed and left alone.
`check` validates a parsed body by its kind and says what is wrong, field by field:

- **Interactions** (`block_actions`, `view_submission`, other payload types): form-encoded with a
  JSON `payload` field. One that does not fit, or that arrives as a JSON body, is answered
  **400** with `{"error": …, "fields": [{"field": "actions.0.value", "message": …}]}`. Slack
  shows the person who clicked its own "something went wrong" mark; nothing runs.
- **Slash commands**: form-encoded. The person typing sees the HTTP answer, so a command that
  does not fit is answered **200** with an ephemeral "Quorum could not read this command
  (correlation id …)" naming the field; nothing runs. A command sent as a JSON body is not
  Slack's and is answered 400.
- **Events API** (`url_verification`, `event_callback`, …) and `ssl_check`: JSON or form, as
  Slack sends them; one that does not fit is answered 400.

Listeners read the validated model from the bolt context (`payload_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError
from slack_bolt.context.async_context import AsyncBoltContext

from bot.domain.text import control_character_message

PAYLOAD_KEY = "quorum_payload"  # where the validated model is kept in bolt's context


class _Slack(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Team(_Slack):
    id: StrictStr
    enterprise_id: StrictStr | None = None


class User(_Slack):
    id: StrictStr
    team_id: StrictStr | None = None
    is_stranger: StrictBool = False


class Channel(_Slack):
    id: StrictStr


class Container(_Slack):
    type: StrictStr | None = None
    message_ts: StrictStr | None = None
    channel_id: StrictStr | None = None


class Message(_Slack):
    ts: StrictStr | None = None


class Action(_Slack):
    action_id: StrictStr
    block_id: StrictStr | None = None
    value: StrictStr | None = None


class BlockActions(_Slack):
    type: Literal["block_actions"]
    team: Team
    api_app_id: StrictStr | None = None
    enterprise_id: StrictStr | None = None
    is_stranger: StrictBool = False
    user: User
    channel: Channel | None = None
    container: Container | None = None
    message: Message | None = None
    actions: list[Action] = Field(min_length=1)
    response_url: StrictStr | None = None
    trigger_id: StrictStr | None = None


class InputValue(_Slack):
    value: StrictStr | None = None


class ViewState(_Slack):
    values: dict[StrictStr, dict[StrictStr, InputValue]]


class View(_Slack):
    callback_id: StrictStr
    private_metadata: StrictStr = ""
    app_id: StrictStr | None = None
    state: ViewState


class ViewSubmission(_Slack):
    type: Literal["view_submission"]
    team: Team
    api_app_id: StrictStr | None = None
    enterprise_id: StrictStr | None = None
    is_stranger: StrictBool = False
    user: User
    view: View
    trigger_id: StrictStr | None = None

    def input_value(self, block_id: str, action_id: str) -> str | None:
        field = self.view.state.values.get(block_id, {}).get(action_id)
        return None if field is None else field.value


class OtherInteraction(_Slack):
    """An interaction Quorum has no listener for (shortcuts, view_closed, …): bolt answers it."""

    type: StrictStr


class SlashCommand(_Slack):
    command: StrictStr
    text: StrictStr = ""
    user_id: StrictStr = Field(min_length=1)
    team_id: StrictStr | None = None
    channel_id: StrictStr | None = None
    response_url: StrictStr | None = None
    trigger_id: StrictStr | None = None


class EventEnvelope(_Slack):
    """`url_verification`, `event_callback` and other Events API bodies (bolt answers them)."""

    type: StrictStr
    challenge: StrictStr | None = None
    event: dict[str, Any] | None = None


class SslCheck(_Slack):
    ssl_check: StrictStr


Payload = BlockActions | ViewSubmission | OtherInteraction | SlashCommand | EventEnvelope | SslCheck
Kind = Literal["interaction", "command", "event"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a signed body is not one Quorum can read: its kind and the fields at fault."""

    kind: Kind
    message: str
    fields: tuple[dict[str, str], ...] = ()


_INTERACTIONS = frozenset({"block_actions", "view_submission"})


def check(body: Mapping[str, Any], *, form: bool, interaction: bool) -> Payload | Refusal:
    """The typed model of a parsed body, or why it is not one. `form`: the body was
    form-encoded; `interaction`: it carried a `payload` field (an interaction)."""
    kind = body.get("type")
    if interaction or (not form and isinstance(kind, str) and kind in _INTERACTIONS):
        if not form:
            return Refusal(
                "interaction",
                "Slack sends interactions form-encoded, not as a JSON body",
                ({"field": "payload", "message": "expected a form field holding JSON"},),
            )
        unfit = "the interaction payload does not fit"
        if kind == "block_actions":
            return _validate(BlockActions, body, "interaction", unfit)
        if kind == "view_submission":
            return _validate(ViewSubmission, body, "interaction", unfit)
        return _validate(OtherInteraction, body, "interaction", unfit)
    if "command" in body:
        if not form:
            return Refusal(
                "command",
                "Slack sends slash commands form-encoded, not as a JSON body",
                ({"field": "command", "message": "expected a form-encoded body"},),
            )
        checked = _validate(SlashCommand, body, "command", "the slash command does not fit")
        if isinstance(checked, SlashCommand) and (
            problem := control_character_message(checked.text)
        ):
            return Refusal("command", "the command text is not text", _field("text", problem))
        return checked
    if "ssl_check" in body:
        return _validate(SslCheck, body, "event", "the SSL check does not fit")
    return _validate(EventEnvelope, body, "event", "the event does not fit")


_M = TypeVar("_M", bound=BaseModel)


def payload_of(context: AsyncBoltContext, model: type[_M]) -> _M:
    """The validated model `check` put in the bolt context (listeners run only after it)."""
    payload = context.get(PAYLOAD_KEY)
    if not isinstance(payload, model):
        raise TypeError(f"no validated {model.__name__} in the bolt context")
    return payload


def _validate(model: type[_M], body: Mapping[str, Any], kind: Kind, message: str) -> _M | Refusal:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = tuple(
            {
                "field": ".".join(str(part) for part in error["loc"]) or "body",
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False, include_input=False)[:10]
        )
        return Refusal(kind, message, fields)
    except RecursionError:
        return Refusal(kind, message, _field("body", "nested too deeply"))


def _field(name: str, message: str) -> tuple[dict[str, str], ...]:
    return ({"field": name, "message": message},)
