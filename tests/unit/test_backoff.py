"""Callback retry timing: capped exponential backoff with equal jitter, and the give-up window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.backoff import ceiling, gives_up, next_attempt

NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
BASE = timedelta(seconds=5)
CAP = timedelta(hours=1)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        pytest.param(1, timedelta(seconds=5), id="first"),
        pytest.param(2, timedelta(seconds=10), id="second"),
        pytest.param(5, timedelta(seconds=80), id="fifth"),
        pytest.param(10, timedelta(seconds=2560), id="tenth"),
        pytest.param(11, CAP, id="capped"),
        pytest.param(10_000, CAP, id="huge-attempt-no-overflow"),
    ],
)
def test_ceiling(attempt: int, expected: timedelta) -> None:
    assert ceiling(attempt, base=BASE, cap=CAP) == expected


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [
        pytest.param(1, 0.0, timedelta(seconds=2.5), id="floor-is-half-the-ceiling"),
        pytest.param(1, 0.5, timedelta(seconds=3.75), id="middle"),
        pytest.param(3, 0.0, timedelta(seconds=10), id="third-floor"),
        pytest.param(30, 0.0, timedelta(minutes=30), id="capped-floor"),
    ],
)
def test_next_attempt_exact(attempt: int, jitter: float, delay: timedelta) -> None:
    assert next_attempt(attempt, NOW, jitter=jitter, base=BASE, cap=CAP) == NOW + delay


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999999], ids=["0", "0.25", "0.5", "max"])
def test_next_attempt_monotonic_bounded_and_capped(jitter: float) -> None:
    delays = [next_attempt(n, NOW, jitter=jitter) - NOW for n in range(1, 40)]
    assert delays == sorted(delays), "a later attempt never waits less for the same draw"
    for n, delay in enumerate(delays, start=1):
        top = ceiling(n, base=BASE, cap=CAP)
        assert top / 2 <= delay <= top
        assert delay <= CAP
    assert delays[-1] >= CAP / 2, "the delay reaches the cap region"


def test_jitter_spreads_retries_of_the_same_attempt() -> None:
    times = {next_attempt(6, NOW, jitter=j / 10) for j in range(10)}
    assert len(times) == 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"attempt": 0, "now": NOW, "jitter": 0.5}, "1-based", id="attempt-zero"),
        pytest.param({"attempt": 1, "now": NOW, "jitter": 1.0}, "jitter", id="jitter-one"),
        pytest.param({"attempt": 1, "now": NOW, "jitter": -0.1}, "jitter", id="jitter-negative"),
        pytest.param(
            {"attempt": 1, "now": NOW.replace(tzinfo=None), "jitter": 0.5}, "aware", id="naive"
        ),
        pytest.param(
            {"attempt": 1, "now": NOW, "jitter": 0.5, "cap": timedelta(seconds=1)},
            "base <= cap",
            id="cap-below-base",
        ),
    ],
)
def test_next_attempt_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        next_attempt(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        pytest.param(timedelta(0), False, id="just-started"),
        pytest.param(timedelta(hours=23, minutes=59), False, id="inside-window"),
        pytest.param(timedelta(hours=24), True, id="window-ends"),
        pytest.param(timedelta(days=3), True, id="long-after"),
    ],
)
def test_gives_up(elapsed: timedelta, expected: bool) -> None:
    assert gives_up(NOW, NOW + elapsed, timedelta(hours=24)) is expected
