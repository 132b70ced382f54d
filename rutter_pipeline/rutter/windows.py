"""Millisecond time windows: the unit Rutter's ``created_at``/``updated_at`` filters speak.

Rutter's filters are inclusive on both ends (``>=`` min, ``<=`` max) and take Unix milliseconds,
while records carry ISO-8601 strings. Keeping the conversions and the window arithmetic in one
place is what lets the fetcher prove that a day's fragments add up to exactly that day: an
off-by-one here silently drops or doubles the records at the edges.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
DAY_MS = 86_400_000


def day_window_ms(day: date) -> tuple[int, int]:
    """The inclusive ms window of a UTC day: its first ms and the ms before the next day starts."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_ms = (start - _EPOCH) // _MS
    return start_ms, start_ms + DAY_MS - 1


def split_window(start_ms: int, end_ms: int, n: int) -> list[tuple[int, int]]:
    """Split the inclusive window ``[start_ms, end_ms]`` into at most ``n`` disjoint inclusive parts.

    The parts are ordered, touch without overlapping (``b_i + 1 == a_{i+1}``) and their union is the
    whole window, so fetching each part with inclusive filters returns every record exactly once.
    Sizes differ by at most 1 ms; a window shorter than ``n`` ms yields fewer parts rather than
    empty ones.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if end_ms < start_ms:
        raise ValueError(f"empty window: end {end_ms} is before start {start_ms}")
    size = end_ms - start_ms + 1
    n = min(n, size)
    base, extra = divmod(size, n)
    parts: list[tuple[int, int]] = []
    a = start_ms
    for i in range(n):
        b = a + base + (1 if i < extra else 0) - 1
        parts.append((a, b))
        a = b + 1
    return parts


def iso_to_ms(value: str) -> int:
    """Unix ms of an ISO-8601 timestamp as Rutter sends it (``2023-01-02T02:34:56.000Z``).

    A timestamp without an offset is read as UTC, which is what Rutter documents for its fields.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _MS


def ms_to_iso(value: int) -> str:
    """The ISO-8601 UTC form (ms precision, ``Z``) of a Unix ms value, for messages and logs."""
    return (_EPOCH + value * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")
