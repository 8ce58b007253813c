"""Every Slack id a policy names (users, user groups, channels) with its key path, found from the
models' field types, so a key added later with a Slack id type is listed without changes here."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, WithJsonSchema
from pydantic.fields import FieldInfo

from bot.policy.model import Policy
from bot.policy.types import (
    _SLACK_CHANNEL,
    _SLACK_USER,
    _SLACK_USERGROUP,
    Loc,
    _format_loc,
)


class SlackIdKind(StrEnum):
    USER = "user"
    USERGROUP = "usergroup"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class SlackIdRef:
    """One Slack id in the policy: `path` as policy errors print it (`teams.sre.members[0]`)."""

    path: str
    kind: SlackIdKind
    id: str


# The id types of bot/policy/types.py carry their pattern in a WithJsonSchema marker.
_KIND_BY_PATTERN = {
    _SLACK_USER: SlackIdKind.USER,
    _SLACK_USERGROUP: SlackIdKind.USERGROUP,
    _SLACK_CHANNEL: SlackIdKind.CHANNEL,
}


def slack_ids(policy: Policy) -> list[SlackIdRef]:
    """The policy's Slack ids in the models' field order (the documented order of the file)."""
    return list(_walk(Policy, policy, ()))


def _walk(annotation: Any, value: Any, loc: Loc) -> Iterator[SlackIdRef]:
    if value is None:
        return
    base, metadata = _unwrap(annotation)
    kind = _kind(metadata)
    if kind is not None:
        if isinstance(value, str):
            yield SlackIdRef(_format_loc(loc), kind, value)
        return
    if isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            yield from _walk(_field_type(field), getattr(value, name), (*loc, field.alias or name))
        return
    origin = get_origin(base)
    args = get_args(base)
    if origin is Union or origin is UnionType:
        fitting = next((arg for arg in args if arg is not NoneType and _fits(arg, value)), None)
        if fitting is not None:
            yield from _walk(fitting, value, loc)
    elif isinstance(value, Mapping) and len(args) == 2:
        for key, item in value.items():
            yield from _walk(args[1], item, (*loc, str(key)))
    elif isinstance(value, tuple) and args:
        for index, item in enumerate(value):
            item_type = args[0] if args[-1] is Ellipsis else args[min(index, len(args) - 1)]
            yield from _walk(item_type, item, (*loc, index))


def _unwrap(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return base, tuple(metadata)
    return annotation, ()


def _field_type(field: FieldInfo) -> Any:
    # pydantic moves a field's own Annotated metadata into FieldInfo.metadata: put it back.
    if field.metadata:
        return Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _kind(metadata: tuple[Any, ...]) -> SlackIdKind | None:
    for item in metadata:
        if isinstance(item, WithJsonSchema) and isinstance(item.json_schema, Mapping):
            kind = _KIND_BY_PATTERN.get(item.json_schema.get("pattern", ""))
            if kind is not None:
                return kind
    return None


def _fits(annotation: Any, value: Any) -> bool:
    base, _ = _unwrap(annotation)
    origin = get_origin(base) or base
    return isinstance(origin, type) and isinstance(value, origin)
