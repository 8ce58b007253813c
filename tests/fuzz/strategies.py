"""Hypothesis strategies: real payloads, mutated.

`mutated(doc)` changes one to three places of a real payload: a value replaced by another JSON
type (or a hostile string, a huge number, a raw `1e309`), a key deleted or added, a value nested
~200 levels deep. `encoded` turns a document into bytes the way a careless or hostile sender
might (raw numbers spliced in, lone surrogates as invalid UTF-8). `odd_bodies` are bodies that
are not documents at all.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from bot.app import MAX_BODY_BYTES

HUGE_NUMBERS: tuple[int | float, ...] = (
    999999999999,
    253402300800,
    -1,
    0,
    2**31,
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    10**30,
    1.5,
    -0.0,
    float("inf"),
    float("nan"),
)
HOSTILE_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\u200b",
    "\u200b\u200b",
    "\ufeff",
    "\u202e",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "<!channel>",
    "<https://evil.example|approve here>",
    "999999999999",
    "253402300800",
    "1e309",
    "-1",
    "null",
    "true",
    "[]",
    "{}",
    "%00",
    "../../etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "https://127.0.0.1:1/",
)
# JSON text no `json.dumps` writes: spliced into the encoded body in place of a marker.
RAW_TOKENS: tuple[bytes, ...] = (b"1e309", b"-1e309", b"NaN", b"-Infinity", b"9" * 5000, b"1e-400")
_RAW = "@@raw{}@@"

Path = tuple[str | int, ...]

# Long strings, built when drawn (so that strategy reprs stay short).
long_strings: st.SearchStrategy[str] = st.sampled_from([("x", 70_000), ("🚀", 2_000)]).map(
    lambda spec: spec[0] * spec[1]
)
scalars: st.SearchStrategy[Any] = st.one_of(
    long_strings,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_STRINGS),
    st.sampled_from(HUGE_NUMBERS),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
keys: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=12), st.sampled_from(HOSTILE_STRINGS[:12])
)


def nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def paths(doc: Any, prefix: Path = ()) -> list[Path]:
    """Every place in the document below its root (a deep value counts as one place)."""
    found: list[Path] = []
    if len(prefix) > 12:
        return found
    children: list[tuple[str | int, Any]] = []
    if isinstance(doc, dict):
        children = list(doc.items())
    elif isinstance(doc, list):
        children = list(enumerate(doc))
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def _at(doc: Any, path: Path) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_changes: int = 3) -> Any:
    """A copy of `base` changed in one to `max_changes` places."""
    doc = copy.deepcopy(base)
    raw = 0
    for _ in range(draw(st.integers(1, max_changes))):
        places = paths(doc)
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent, key = _at(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "nest", "raw"]))
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif op == "add":
            target = parent[key]
            if isinstance(target, dict):
                target[draw(keys)] = draw(json_values)
            elif isinstance(target, list):
                target.append(draw(json_values))
            else:
                parent[key] = [target, draw(json_values)]
        elif op == "nest":
            depth = draw(st.sampled_from([2, 50, 200]))
            parent[key] = nest(parent[key], depth, draw(st.booleans()))
        else:
            parent[key] = _RAW.format(draw(st.sampled_from(range(len(RAW_TOKENS)))))
            raw += 1
    return doc


def encode(doc: Any, ascii_only: bool = True) -> bytes:
    """JSON bytes of `doc`, raw tokens spliced in; lone surrogates pass through as bytes that
    are not UTF-8."""
    text = json.dumps(doc, ensure_ascii=ascii_only)
    data = text.encode("utf-8", "surrogatepass")
    for index, token in enumerate(RAW_TOKENS):
        data = data.replace(json.dumps(_RAW.format(index)).encode(), token)
    return data


@st.composite
def encoded(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> bytes:
    return encode(draw(docs), ascii_only=draw(st.booleans()))


OVERSIZE = b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'  # just over 1 MiB
odd_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from(
        [
            b"",
            b" ",
            b"\xff\xfe\x00\x01",
            b"\xc3\x28",
            b"null",
            b"[]",
            b"1",
            b'"text"',
            b"{",
            b'{"a": 1,}',
            b"[" * 100_000,
            b'{"a":' * 100_000,
            b"[" * 200 + b"]" * 200,
            b"\x00" * 64,
            b"payload=",
            b"payload=%7B",
            b"a=1&a=2&&=&%zz",
        ]
    ),
    st.binary(max_size=64),
)
