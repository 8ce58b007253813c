"""Durations in the policy file: parsing, the canonical spelling, and the errors users see."""

import re
from datetime import timedelta

import pytest

from bot.domain.durations import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d4h", timedelta(days=2, hours=4)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("96h", timedelta(hours=96)),
        ("90m", timedelta(minutes=90)),
        (" 15m ", timedelta(minutes=15)),
    ],
)
def test_parse_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("0s", "must be longer than zero"),
        ("0h0m", "must be longer than zero"),
        ("-5m", "invalid duration '-5m'"),
        ("5", "invalid duration '5'"),
        ("5y", "invalid duration '5y'"),
        ("1.5h", "invalid duration '1.5h'"),
        ("30m1h", "units largest first"),
        ("1h1h", "invalid duration '1h1h'"),
        ("1 h", "invalid duration '1 h'"),
        ("h", "invalid duration 'h'"),
        ("99999w", "longer than"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(ValueError, match="got int 15"):
        parse_duration(15)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=24), "1d"),
        (timedelta(days=9, seconds=1), "1w2d1s"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=1500), "1s"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize("text", ["30s", "1h30m", "2d4h", "1w2d3h4m5s", "90m", "96h"])
def test_format_is_the_inverse_of_parse(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@pytest.mark.parametrize(("text", "matches"), [("1h30m", True), ("30m1h", False), ("1x", False)])
def test_json_schema_pattern_agrees_with_the_parser(text: str, matches: bool) -> None:
    assert (re.fullmatch(DURATION_PATTERN, text) is not None) is matches
