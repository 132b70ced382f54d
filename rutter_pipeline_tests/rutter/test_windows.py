"""Window arithmetic: a day's fragments must add up to exactly that day, or records are lost/doubled.

hypothesis is not installed in this environment, so the property tests draw their cases from a
seeded ``random.Random`` (reproducible) plus exhaustive small windows, which is where off-by-one
errors live.
"""

from __future__ import annotations

import itertools
import random
from datetime import date

import pytest

from rutter_pipeline.rutter.windows import DAY_MS, day_window_ms, iso_to_ms, ms_to_iso, split_window


def test_day_window_is_the_utc_day_inclusive() -> None:
    start, end = day_window_ms(date(2026, 1, 14))
    assert start == 1768348800000  # 2026-01-14T00:00:00Z
    assert end == 1768435199999  # 2026-01-14T23:59:59.999Z
    assert end - start + 1 == DAY_MS
    assert day_window_ms(date(2026, 1, 15))[0] == end + 1
    assert ms_to_iso(start) == "2026-01-14T00:00:00.000Z"
    assert ms_to_iso(end) == "2026-01-14T23:59:59.999Z"


def test_iso_to_ms_reads_rutter_timestamps() -> None:
    assert iso_to_ms("2026-01-14T00:00:00.000Z") == 1768348800000
    assert iso_to_ms("2026-01-14T23:59:59.999Z") == 1768435199999
    assert iso_to_ms("2026-01-14T01:00:00.000+01:00") == 1768348800000
    assert iso_to_ms("2026-01-14T00:00:00") == 1768348800000  # naive means UTC


def _check_split(start: int, end: int, n: int) -> None:
    parts = split_window(start, end, n)
    assert 1 <= len(parts) <= n
    assert parts[0][0] == start and parts[-1][1] == end
    for a, b in parts:
        assert a <= b  # no empty part
    for (_, b), (a2, _) in itertools.pairwise(parts):
        assert a2 == b + 1  # ordered, disjoint, no gap
    sizes = [b - a + 1 for a, b in parts]
    assert sum(sizes) == end - start + 1
    assert max(sizes) - min(sizes) <= 1
    if end - start + 1 >= n:
        assert len(parts) == n


def test_split_window_exhaustive_small_windows() -> None:
    for start in (-3, 0, 7):
        for length in range(1, 25):
            for n in range(1, 12):
                _check_split(start, start + length - 1, n)


def test_split_window_random_windows() -> None:
    rng = random.Random(20260115)
    for _ in range(3000):
        start = rng.randrange(0, 2_000_000_000_000)
        end = start + rng.choice([0, 1, 2, rng.randrange(0, 10), rng.randrange(0, 100 * DAY_MS)])
        _check_split(start, end, rng.randrange(1, 40))


@pytest.mark.parametrize("n", [1, 3, 5])
def test_split_day_covers_every_ms_exactly_once(n: int) -> None:
    start, end = day_window_ms(date(2026, 1, 14))
    parts = split_window(start, end, n)
    owners = [sum(a <= t <= b for a, b in parts) for t in (start, end, start + 1, end - 1)]
    assert owners == [1, 1, 1, 1]
    for a, _b in parts[1:]:
        assert sum(x <= a <= y for x, y in parts) == 1
        assert sum(x <= a - 1 <= y for x, y in parts) == 1


def test_split_window_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        split_window(10, 9, 1)
    with pytest.raises(ValueError):
        split_window(0, 10, 0)
