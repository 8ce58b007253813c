"""Human durations for the policy file (`30s`, `15m`, `4h`, `2d`, `1w`, `1h30m`) and back.

Units are written largest first, each at most once, so a value has one spelling (`1h30m`, never
`30m1h` or `90m1h`); that keeps the policy file and its error messages unambiguous.
"""

from __future__ import annotations

import re
from datetime import timedelta

# One optional group per unit, largest first: the order and "at most once" come from the regex.
DURATION_PATTERN = r"^(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?$"
_DURATION = re.compile(
    r"(?:(?P<w>[0-9]+)w)?(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?"
)
_UNIT_SECONDS = (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_EXPECTED = "expected a duration such as 30s, 15m, 4h, 2d, 1w or 1h30m (units largest first)"
# Far beyond any sensible SLA, and well inside timedelta's range.
_MAX = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`-style text into a positive timedelta; raise ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"{_EXPECTED}, got {type(text).__name__} {text!r}")
    value = text.strip()
    if not value:
        raise ValueError(f"empty duration: {_EXPECTED}")
    match = _DURATION.fullmatch(value)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"invalid duration {text!r}: {_EXPECTED}")
    seconds = sum(int(match[unit] or 0) * factor for unit, factor in _UNIT_SECONDS)
    if seconds == 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    result = timedelta(seconds=seconds)
    if result > _MAX:
        raise ValueError(f"invalid duration {text!r}: longer than {format_duration(_MAX)}")
    return result


def format_duration(value: timedelta) -> str:
    """The canonical text of a duration (`1h30m`); the inverse of `parse_duration`.

    Sub-second parts are dropped; zero is `0s`. Negative durations are not durations here.
    """
    if value < timedelta(0):
        raise ValueError(f"cannot format a negative duration: {value!r}")
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    parts: list[str] = []
    for unit, factor in _UNIT_SECONDS:
        count, remaining = divmod(remaining, factor)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
