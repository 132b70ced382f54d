"""What each load step did: the landing, the range merge and the incremental upsert.

One result type per step, read by the assets' metadata (defs/ingest.py), the batched runs
(batch.py) and the incremental sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class LandingStats:
    entity: str
    connection_id: str
    start: date
    end: date
    run_id: str
    passed: bool
    per_date: dict[date, int]
    # Days whose landing failed its own gate (rejects over the tolerance): flagged not passed, so
    # the merge leaves them out while the range's other days merge.
    held: frozenset[date] = frozenset()

    @property
    def total(self) -> int:
        return sum(self.per_date.values())


@dataclass(frozen=True)
class ChildCounts:
    inserted: int = 0
    deleted: int = 0
    # Child elements left out because their parent already had one of that id (the first is kept).
    duplicates: int = 0


@dataclass(frozen=True)
class MergeStats:
    """What a merge did. ``unchanged`` includes ``stale`` (records older than the stored row)."""

    entity: str
    connection_id: str
    start: date
    end: date
    run_id: str
    inserted: int
    updated: int
    unchanged: int
    stale: int
    deleted: int
    children: dict[str, ChildCounts] = field(default_factory=dict)
    # How many of the range's chunks were first loads written straight from the landing.
    direct_chunks: int = 0
    # Days left out because their landing failed validation (merge(skip_held=True) only).
    held: tuple[date, ...] = ()
    # The same counts per calendar month of the range (first day -> counts of its merged days): a
    # month partition reports its own, not the range's. Months with no merged day are absent.
    by_month: dict[date, MergeStats] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True)
class UpsertStats:
    """What an incremental upsert did; ``changed_partitions`` are the days whose rows changed."""

    entity: str
    connection_id: str
    run_id: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    stale: int
    children: dict[str, ChildCounts] = field(default_factory=dict)
    changed_partitions: frozenset[date] = frozenset()
