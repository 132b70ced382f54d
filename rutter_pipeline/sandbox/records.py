"""Versioned records and the days that hold them, kept as JSON bytes in plain tuples.

A record is generated once with its whole deterministic timeline (created, paid, fulfilled,
refunded ...). ``times[v]`` is when version ``v`` came to be; the version served is the last one at
or before the sandbox's "now", so advancing the clock changes records and ``updated_at`` filters
matter.

Why bytes: every version of a record shares most of its fields, so a record is stored as one
serialized ``head`` (the fields that never change, without the closing brace) and one short
``tail`` per version (the fields that do, from a comma to the closing brace). Serving version ``v``
is then ``head + tails[v]``: no dict is kept, merged or re-serialized, and memory is about half
that of the dicts.

The clock only moves forward, so a version already superseded when its record is generated can
never be served: its tail is left empty (``SUPERSEDED``), and a record generated at its final
version (most of a long history) is stored as the one JSON of that version, with no tails.

Why plain tuples: a cache holds hundreds of thousands of records, and every instance of a class
(slots or not) stays tracked by the cyclic GC, which then walks them all again and again; a tuple
of strings, ints and bytes is untracked by the first collection or two that see it. So a record is
``(key, created_ms, times, head, tails)`` and the functions below read it.

JSON key order is static fields first, then the changing ones; JSON objects are unordered, so the
shapes are the same as Rutter's.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import orjson

from rutter_pipeline.sandbox.gcpolicy import generating

# (key, created_ms, times, head, tails). ``key`` is the unique sort tie-breaker within (connection,
# entity): the id, unless the id is null. Empty ``tails``: ``head`` is the whole JSON of the final version.
Rec = tuple[str, int, tuple[int, ...], bytes, tuple[bytes, ...]]
# Final literals, not ``range(5)``: a type checker then knows the type of each field a constant reads.
KEY: Final = 0
CREATED: Final = 1
TIMES: Final = 2
HEAD: Final = 3
TAILS: Final = 4
SUPERSEDED = b""  # the tail of a version superseded before its record was generated


def version_at(rec: Rec, now_ms: int) -> int:
    """Index of the version current at ``now_ms``; -1 if the record does not exist yet."""
    times = rec[TIMES]
    if now_ms >= times[-1]:
        return len(times) - 1
    return bisect_right(times, now_ms) - 1


def rec_bytes(rec: Rec, v: int) -> bytes:
    """The JSON of version ``v`` (one that can still be served: the current one or a later one)."""
    tails = rec[TAILS]
    return rec[HEAD] + tails[v] if tails else rec[HEAD]


def rec_field(rec: Rec, v: int, name: str) -> object:
    """One top-level field of version ``v`` (the changing fields are found without parsing the head)."""
    tails = rec[TAILS]
    if tails:
        tail = orjson.loads(b"{" + tails[v][1:])
        if name in tail:
            return tail[name]
    return orjson.loads(rec_bytes(rec, v)).get(name)


def tight(data: bytes) -> bytes:
    """A copy of exactly ``len(data)`` bytes: orjson's result keeps its whole working buffer (several
    times the JSON's size), which would more than double the memory of every record kept."""
    return bytes(memoryview(data))


def versioned(
    key: str, created_ms: int, times: tuple[int, ...], static: dict, changing: list[dict], now: int = -1
) -> Rec:
    """A record from its static fields and, per version, the full set of its changing fields.

    Neither part may be empty (every version carries at least ``updated_at``). Versions superseded
    at ``now`` are left out.
    """
    current = bisect_right(times, now) - 1
    if current >= len(times) - 1:
        static.update(changing[-1])
        return key, created_ms, times, tight(orjson.dumps(static)), ()
    tails = tuple(
        [orjson.dumps(c).replace(b"{", b",", 1) if v >= current else SUPERSEDED for v, c in enumerate(changing)]
    )
    return key, created_ms, times, orjson.dumps(static)[:-1], tails


class DayData:
    """The records of one entity created on one UTC day, sorted by (created_at, key).

    ``created`` and ``keys`` are known for the whole day; the records themselves may be generated
    lazily (``LazyDay``), so readers ask for ``at(i)`` / ``ensure(n)`` rather than indexing ``recs``.
    """

    def __init__(self, recs: list[Rec]) -> None:
        recs.sort(key=sort_key)
        self.recs = recs
        self.created = [r[CREATED] for r in recs]
        self.keys = [r[KEY] for r in recs]

    def __len__(self) -> int:
        return len(self.created)

    def ensure(self, n: int) -> None:
        """Make sure the first ``n`` records exist (they always do here)."""

    def at(self, i: int) -> Rec:
        return self.recs[i]

    def all(self) -> list[Rec]:
        return self.recs

    def bounds(
        self, lo_ms: int, hi_ms: int, after: tuple[int, str] | None = None, desc: bool = False
    ) -> tuple[int, int]:
        """Index range [i, j) of the records with lo <= created_at <= hi, past the cursor key ``after``."""
        created, keys = self.created, self.keys
        i, j = bisect_left(created, lo_ms), bisect_right(created, hi_ms)
        if after is not None:
            if desc:  # keep sort keys <= after
                while j > i and (created[j - 1], keys[j - 1]) > after:
                    j -= 1
            else:  # keep sort keys >= after
                while i < j and (created[i], keys[i]) < after:
                    i += 1
        return i, j


class LazyDay(DayData):
    """A day whose record list is known up front (times and keys) but generated on demand, in order.

    ``fill(recs, n)`` appends the next records until at least ``n`` exist; it draws from one
    generator per day, so records come out the same whatever the order and size of the requests
    that asked for them. A page of 500 then costs 500 records, not the whole day; ``backlog`` (when
    set) counts what was generated and learns of days left half-done, for the read-ahead.
    """

    def __init__(
        self,
        created: list[int],
        keys: list[str],
        fill: Callable[[list[Rec], int], None],
        backlog: Backlog | None = None,
    ) -> None:
        self.recs: list[Rec] = []
        self.created = created
        self.keys = keys
        self._fill: Callable[[list[Rec], int], None] | None = fill
        self.backlog = backlog

    @property
    def complete(self) -> bool:
        return len(self.recs) >= len(self.created)

    def ensure(self, n: int) -> None:
        n = min(n, len(self.created))
        if len(self.recs) >= n:
            return
        before = len(self.recs)
        assert self._fill is not None  # only a complete day drops it, and that returned above
        with generating():  # see gcpolicy
            self._fill(self.recs, n)
        if self.complete:
            self._fill = None  # the day's generator and what it refers to (customer-days ...) can go
        if self.backlog is not None:
            self.backlog.note(self, len(self.recs) - before)

    def at(self, i: int) -> Rec:
        if i >= len(self.recs):
            self.ensure(i + 1)
        return self.recs[i]

    def all(self) -> list[Rec]:
        self.ensure(len(self.created))
        return self.recs


class Backlog:
    """Bookkeeping of lazily generated days: how many records they made, and (when ``track``) the
    days that requests left half-generated, most recent last, for the read-ahead to finish.

    Days are held by weak reference: one the cache has dropped is not worth finishing, and is not
    kept alive.
    """

    MAX_DAYS = 8  # bounded: a client that touches many days does not make the sandbox finish them all

    def __init__(self, track: bool = True) -> None:
        self.track = track
        self.records = 0  # records generated by lazy days, whoever asked
        self._days: dict[int, weakref.ref[LazyDay]] = {}
        self.wake: Callable[[], None] | None = None  # set by the read-ahead task

    def __len__(self) -> int:
        return len(self._days)

    def note(self, day: LazyDay, made: int) -> None:
        self.records += made
        if not self.track:
            return
        self._days.pop(id(day), None)
        if day.complete:
            return
        self._days[id(day)] = weakref.ref(day)
        while len(self._days) > self.MAX_DAYS:
            del self._days[next(iter(self._days))]
        if self.wake is not None:
            self.wake()

    def latest(self) -> LazyDay | None:
        """The most recently touched day still worth finishing, or None."""
        while self._days:
            key = next(reversed(self._days))
            day = self._days[key]()
            if day is not None and not day.complete:
                return day
            del self._days[key]
        return None


def sort_key(rec: Rec) -> tuple[int, str]:
    return rec[CREATED], rec[KEY]


@dataclass
class EventDay:
    """Every version change of one entity that happened on one UTC day, sorted by (time, key).

    Built from the days whose records can still change on this day (bounded by the maximum update
    delay), so an ``updated_at`` window only touches the events inside it.
    """

    events: list[tuple[int, str, Rec, int]]
    times: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events.sort(key=lambda e: (e[0], e[1]))
        self.times = [e[0] for e in self.events]

    def span(self, lo_ms: int, hi_ms: int) -> list[tuple[int, str, Rec, int]]:
        return self.events[bisect_left(self.times, lo_ms) : bisect_right(self.times, hi_ms)]
