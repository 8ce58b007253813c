"""Loading `quorum.yml`: strict YAML, validation that reports every error at once as
`<file>: <key.path[i]>: <what was wrong and what was expected>`, the JSON Schema, a summary."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from bot.policy.model import Policy
from bot.policy.references import _References
from bot.policy.types import Loc, PolicyError, _describe, _format_loc

# --- public functions ------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises PolicyError naming the file in every line."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{source}: not UTF-8 text ({exc.reason})"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise PolicyError([f"{source}: {_yaml_error(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: invalid YAML: {exc}"]) from None
    return _validate(data, source)


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of quorum.yml, for editors (cross-references are checked only by Quorum)."""
    schema = Policy.model_json_schema(mode="validation", by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Quorum policy (quorum.yml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def summary(policy: Policy) -> str:
    """`ok: 6 teams, 2 services, 2 environments`."""
    counts = (
        (len(policy.teams), "team"),
        (len(policy.services), "service"),
        (len(policy.environments), "environment"),
    )
    return "ok: " + ", ".join(f"{n} {noun}{'' if n == 1 else 's'}" for n, noun in counts)


# --- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `17:30` as text, not YAML 1.1's base-60
    integer 1050 (business hours would otherwise silently become numbers)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | bool | float | NoneType) and key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    f"first {key!r} at line {first.line + 1}",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            if isinstance(key, str | int | bool | float | NoneType):
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_INT_TAG = "tag:yaml.org,2002:int"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"), list("-+0123456789")
)


def _yaml_error(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = exc.problem or "invalid YAML"
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}invalid YAML: {problem}{context}"


# --- validation ------------------------------------------------------------------------------


def _validate(data: object, source: str) -> Policy:
    if data is None:
        raise PolicyError(
            [
                f"{source}: the file is empty "
                "(expected a mapping with version, defaults, teams and environments)"
            ]
        )
    if not isinstance(data, Mapping):
        raise PolicyError([f"{source}: expected a mapping at the top level, got {_describe(data)}"])
    problems: list[tuple[Loc, str]] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems.extend(_from_pydantic(error) for error in exc.errors(include_url=False))
    # Cross-references run on the raw data so they are reported alongside field errors.
    problems.extend(_References(data).check())
    if problems or policy is None:
        ordered = sorted(dict.fromkeys(problems), key=lambda p: _document_order(data, p[0]))
        raise PolicyError([_line(source, loc, message) for loc, message in ordered])
    return policy


def _line(source: str, loc: Loc, message: str) -> str:
    path = _format_loc(loc)
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"


def _document_order(data: Any, loc: Loc) -> tuple[int, ...]:
    """Where the key path sits in the file, so errors read top to bottom."""
    key: list[int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            keys = list(node)
            key.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            key.append(part)
            node = node[part]
        else:
            key.append(0)
            node = None
    return tuple(key)


def _from_pydantic(error: ErrorDetails) -> tuple[Loc, str]:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        # A mapping key failed (e.g. an unknown risk tier or a badly formed name).
        loc = loc[:-1]
        return loc, f"invalid key: {_message(kind, value, ctx, error['msg'], loc)}"
    return loc, _message(kind, value, ctx, error["msg"], loc)


def _message(kind: str, value: Any, ctx: Mapping[str, Any], msg: str, loc: Loc) -> str:
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {loc[-1]!r}{hint}"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx.get("error", msg))
    if kind in {"enum", "literal_error"}:
        return f"expected {ctx.get('expected', 'one of the allowed values')}, got {value!r}"
    if kind == "string_type":
        return f"expected text, got {_describe(value)}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected a whole number, got {_describe(value)}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"expected true or false, got {_describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {value!r}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else msg
    if kind in {"tuple_type", "list_type"}:
        return f"expected a list, got {_describe(value)}"
    if kind in {"dict_type", "mapping_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping, got {_describe(value)}"
    return msg[0].lower() + msg[1:] if msg else kind


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts (for 'unknown key' messages)."""
    annotation: Any = Policy
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {(f.alias or n): f for n, f in annotation.model_fields.items()}
            if part not in fields:
                return []
            annotation = fields[str(part)].annotation
        elif get_origin(annotation) is tuple:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in {dict, Mapping}:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or n for n, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in {Union, UnionType}:
            members = [a for a in get_args(annotation) if a is not NoneType]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
