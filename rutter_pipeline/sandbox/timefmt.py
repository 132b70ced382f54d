"""Time helpers: the sandbox keeps every instant as integer Unix milliseconds (UTC).

Rutter's filters are Unix ms and its record fields ISO 8601 with milliseconds and ``Z``
(``2023-01-02T02:34:56.000Z``); integers make the inclusive window arithmetic exact and the
formatting is a hot path when records are generated, hence the hand-rolled formatter.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(ms: int) -> str:
    """``2023-01-02T02:34:56.000Z`` for a Unix ms instant (table lookups: this runs for every record)."""
    day, rest = divmod(ms, DAY_MS)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        t = time.gmtime(day * 86400)
        prefix = _DAY_PREFIX[day] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
    secs, millis = divmod(rest, 1000)
    return prefix + HMS[secs] + MILLIS[millis]


_DAY_PREFIX: dict[int, str] = {}
HMS = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)]
MILLIS = [f".{m:03d}Z" for m in range(1000)]


def parse_iso_ms(text: str) -> int:
    """Unix ms of an ISO 8601 timestamp (``Z`` or an offset)."""
    return to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the sandbox clock is UTC, pass tzinfo=UTC")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def day_of(ms: int) -> int:
    """Day number (days since 1970-01-01 UTC) of an instant; the unit of lazy generation."""
    return ms // DAY_MS


def day_start(day: int) -> int:
    return day * DAY_MS


def day_number(d: date) -> int:
    return (d - EPOCH_DATE).days


def day_date(day: int) -> date:
    return EPOCH_DATE + timedelta(days=day)


def months_before(ms: int, months: int) -> int:
    """The same UTC wall-clock instant ``months`` calendar months earlier (day clamped to the month)."""
    moment = from_ms(ms)
    month_index = moment.year * 12 + (moment.month - 1) - months
    year, month = divmod(month_index, 12)
    month += 1
    day = min(moment.day, _days_in_month(year, month))
    return to_ms(moment.replace(year=year, month=month, day=day))


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day
