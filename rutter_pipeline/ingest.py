"""Fetch -> validate -> land, and merge, for one scope (connection x contiguous days). No Dagster.

This is the work behind the ``landing/<entity>`` and ``warehouse/<entity>`` assets, kept out of
``defs/`` so it can be tested and benchmarked without an orchestrator and reused by other
orchestrators. Records move page by page: the client yields a page, validation checks it, the
loader COPYs its valid records, and the page is dropped, so memory stays flat however big the scope.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.validation import ValidationReport, validate_records
from rutter_pipeline.warehouse.errors import MissingPartitionField
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.partitioning import partition_day

VALIDATION_CHUNK = 5000


@dataclass(frozen=True)
class Scope:
    """A contiguous run of days of one connection: the unit fetched, validated and merged at once."""

    connection_id: str
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def window_ms(self) -> tuple[int, int]:
        return day_window_ms(self.start)[0], day_window_ms(self.end)[1]

    def __str__(self) -> str:
        if self.start == self.end:
            return f"{self.connection_id}|{self.start.isoformat()}"
        return f"{self.connection_id}|{self.start.isoformat()}..{self.end.isoformat()}"


def reject_day(spec: EntitySpec, record: object) -> date | None:
    """The day a rejected record belongs to, or None when it cannot tell (the record may be garbage)."""
    if not isinstance(record, dict):
        return None
    try:
        return partition_day(spec, record)
    except MissingPartitionField:
        return None


@contextmanager
def _collector_paced() -> Iterator[Callable[[], None]]:
    """Run the landing with the cyclic garbage collector paced by its validation chunks.

    A landing allocates millions of containers: a parsed page of 500 orders is 5,567 dicts and
    lists, 2,796 of them tracked by the collector, alive until its records are landed and all
    acyclic, so only reference counting ever frees them. The collector, left to its thresholds,
    walks them again and again: a young collection every 700 new tracked containers, and a full
    one whenever the survivors grow by a quarter. Measured on 210k orders outside Dagster,
    ``orjson.loads`` of the pages spent 6.4-6.9 s with the collector on and 2.3-2.4 s with it
    paced, the landing 12.5-13.3 s against 10.5-11.0 s; through Dagster the landing step took 12.8
    and 11.9 s against 13.8 and 12.9 s (benchmarks/RESULTS.md). So:

    * the objects that existed before the landing (in a Dagster run worker, the loaded definitions
      and instance) are frozen, out of every collection until it ends;
    * automatic collection is off, and the landing calls the returned function before validating
      each chunk: a collection of the young generations only, which sees each page's containers
      once and frees the reference cycles pandas and pandera left in the previous chunk's
      validation. Switching the collector off without that (an earlier try) let those cycles pile
      up: 701 MB peak instead of ~400 on 210k orders.

    The collector's state is process-wide: it is restored as found when the last of the landings
    running at once in the process (a batched run lands several connections on threads) ends.
    """
    global _paced_landings, _collector_was_enabled
    with _pacing_lock:
        if _paced_landings == 0:
            _collector_was_enabled = gc.isenabled()
            gc.freeze()
            gc.disable()
        _paced_landings += 1
    try:
        yield lambda: gc.collect(1)
    finally:
        with _pacing_lock:
            _paced_landings -= 1
            if _paced_landings == 0:
                if _collector_was_enabled:
                    gc.enable()
                gc.unfreeze()


_pacing_lock = threading.Lock()
_paced_landings = 0
_collector_was_enabled = True


@dataclass
class LandingOutcome:
    """What one scope's landing did, for the asset's metadata and its schema check."""

    scope: Scope
    report: ValidationReport | None = None
    pages: int = 0
    records: int = 0
    landed: int = 0
    rejected: int = 0
    seconds: float = 0.0
    records_by_day: Counter[str] = field(default_factory=Counter)
    # Rejects per day, for rutter.load_log; rejects whose day cannot be told are in no day.
    rejected_by_day: Counter[date] = field(default_factory=Counter)


def land_scope(
    client: RutterClient,
    loader: Loader,
    spec: EntitySpec,
    scope: Scope,
    access_token: str,
    run_id: str,
    *,
    tolerance: float = 0.0,
    force_fetch: bool = False,
) -> LandingOutcome:
    """Fetch the scope's records, validate each page, land the valid ones and record the rejects.

    The landing is replaced for the whole scope in one transaction and flagged with the verdict,
    so the merge refuses a scope whose records failed the schema check.
    """
    started = time.monotonic()
    outcome = LandingOutcome(scope=scope)
    rejects: list[tuple[date | None, dict, list[dict]]] = []

    def validate(batch: list[dict]) -> list[dict]:
        collect_young()  # the previous chunk's validation is garbage by now
        report = validate_records(spec, batch, tolerance=tolerance)
        # The merged report keeps counts, rejects and drift, not the valid records: those are
        # landed and dropped, so memory stays flat however big the scope.
        slim = replace(report, valid=[])
        outcome.report = slim if outcome.report is None else outcome.report.merge(slim)
        for reject in report.rejects:
            rejects.append((reject_day(spec, reject.record), reject.record, reject.errors))
        outcome.landed += len(report.valid)
        return report.valid

    def valid_pages() -> Iterator[Sequence[dict]]:
        # pandera has a fixed cost per call (~8 ms), so pages are validated in chunks of a few thousand.
        start_ms, end_ms = scope.window_ms
        batch: list[dict] = []
        for page in client.iter_created(spec, access_token, start_ms, end_ms, force_fetch=force_fetch):
            outcome.pages += 1
            outcome.records += len(page.records)
            batch.extend(page.records)
            if len(batch) >= VALIDATION_CHUNK:
                yield validate(batch)
                batch = []
        if batch:
            yield validate(batch)

    with _collector_paced() as collect_young:
        landed = loader.land(
            spec,
            scope.connection_id,
            scope.start,
            scope.end,
            valid_pages(),
            run_id,
            passed=lambda: outcome.report is None or outcome.report.passed,
        )
    # The loader reads each record's day anyway: its counts spare a second pass over the records.
    outcome.records_by_day.update({day.isoformat(): n for day, n in landed.per_date.items() if n})
    outcome.rejected_by_day.update(day for day, _, _ in rejects if day is not None)
    if outcome.report is None:  # no records in the scope: an empty batch passes
        outcome.report = validate_records(spec, [], tolerance=tolerance)
    # Always called: it also clears the scope's rejects of an earlier run that are no longer rejects.
    outcome.rejected = loader.write_rejects(
        spec, scope.connection_id, rejects, run_id, start=scope.start, end=scope.end
    )
    outcome.seconds = time.monotonic() - started
    return outcome
