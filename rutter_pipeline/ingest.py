"""Fetch -> validate -> land, and merge, for one scope (connection x contiguous days). No Dagster.

This is the work behind the ``landing/<entity>`` and ``warehouse/<entity>`` assets, kept out of
``defs/`` so it can be tested and benchmarked without an orchestrator and reused by other
orchestrators. Records move page by page: the client yields a page, validation checks it (in chunks,
``ValidatedStream``, shared with the incremental sync), the landing COPYs its valid records, and the
page is dropped, so memory stays flat however big the scope.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.validation import Reject, ValidationReport, validate_records
from rutter_pipeline.warehouse.errors import MissingPartitionField
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.partitioning import partition_day
from rutter_pipeline.warehouse.rejects import Reject as RejectRow

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
def _collector_paced() -> Iterator[Callable[[], int]]:
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


NUL_CHECK = "nul_character"


def nul_errors(paths: list[str]) -> list[dict]:
    """A reject's errors for a record holding NUL characters at ``paths`` (see LandingWriter.write)."""
    return [
        {
            "field": path,
            "check": NUL_CHECK,
            "failure_case": None,
            "message": f"{path}: holds a NUL character (U+0000), which PostgreSQL cannot store",
        }
        for path in paths
    ]


def day_verdicts(
    landed_by_day: Mapping[date, int], rejected_by_day: Mapping[date, int], tolerance: float
) -> dict[date, str]:
    """The days whose rejects exceed ``tolerance`` of their records, with the reason: those are held.

    The reject tolerance is judged per UTC day, the unit the landing, the merge and
    ``rutter.load_log`` work in, so one malformed record holds back its own day and not the
    months around it (issue 19); a schema change, judged over the whole scope, holds all of it.
    """
    held = {}
    for day, rejected in sorted(rejected_by_day.items()):
        total = rejected + landed_by_day.get(day, 0)
        if rejected and rejected / total > tolerance:
            held[day] = f"{rejected} of {total} records rejected (tolerance {tolerance})"
    return held


class ValidatedStream:
    """Pages validated in chunks: the slim report, the rejects and the counts of one fetch.

    The caller drives it: ``add`` each page, and when it says a chunk is full, ``validate`` it and
    write the valid records; after the last page, ``validate`` the rest. Records the warehouse
    refused to store are handed back with ``refuse``. pandera has a fixed cost per call (~8 ms), so
    pages are validated in chunks of a few thousand (``VALIDATION_CHUNK``). The report kept merges
    counts, rejects and drift, not the valid records: those are written and dropped, so memory stays
    flat however big the scope.
    """

    def __init__(self, spec: EntitySpec, tolerance: float) -> None:
        self.spec, self.tolerance = spec, tolerance
        self.report: ValidationReport | None = None
        self.rejects: list[RejectRow] = []
        self.pages = self.records = self.valid = 0
        self._batch: list[dict] = []

    def add(self, records: Sequence[dict]) -> bool:
        """Take a page's records; True when a chunk is full and should be validated now."""
        self.pages += 1
        self.records += len(records)
        self._batch.extend(records)
        return len(self._batch) >= VALIDATION_CHUNK

    @property
    def pending(self) -> bool:
        """Records added and not validated yet."""
        return bool(self._batch)

    def validate(self) -> list[dict]:
        """Validate the records added since the last call; return the valid ones."""
        batch, self._batch = self._batch, []
        report = validate_records(self.spec, batch, tolerance=self.tolerance)
        self._merge(replace(report, valid=[]))
        self.rejects.extend((reject_day(self.spec, r.record), r.record, r.errors) for r in report.rejects)
        self.valid += len(report.valid)
        return report.valid

    def refuse(self, unstorable: Sequence[tuple[dict, list[str]]]) -> None:
        """Reject valid records the warehouse cannot store (a NUL character), weighed by the gate."""
        for record, paths in unstorable:
            errors = nul_errors(paths)
            self.rejects.append((reject_day(self.spec, record), record, errors))
            # Counted in the report (its total has the record already) so that the gate weighs it.
            extra = ValidationReport(self.spec.name, 0, [], [Reject(record, errors)], [], [], tolerance=self.tolerance)
            self._merge(extra)
            self.valid -= 1

    @property
    def passed(self) -> bool:
        return self.report is None or self.report.passed

    def _merge(self, report: ValidationReport) -> None:
        self.report = report if self.report is None else self.report.merge(report)


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
    # Days held back by the gate, with the reason: the whole scope on a schema failure (or too many
    # rejects of no known day), else the days whose own rejects exceed the tolerance.
    held: dict[date, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every day of the scope passed the gate."""
        return not self.held

    @property
    def schema_failed(self) -> bool:
        """The scope as a whole failed: Rutter's schema changed (nothing of it may merge)."""
        return self.report is not None and bool(self.report.schema_failures)


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

    The landing is replaced for the whole scope in one transaction and each day flagged with its
    verdict (``day_verdicts``), so the merge refuses, or with ``skip_held`` leaves out, the days
    that failed. A schema change fails every day of the scope. A record the warehouse cannot store
    (a NUL character in any string) is rejected with that reason, like a malformed one. The COPY
    overlaps the fetch: each chunk is written as soon as it is validated.
    """
    started = time.monotonic()
    outcome = LandingOutcome(scope=scope)
    stream = ValidatedStream(spec, tolerance)
    start_ms, end_ms = scope.window_ms
    pages = client.iter_created(spec, access_token, start_ms, end_ms, force_fetch=force_fetch)
    landing = loader.landing(spec, scope.connection_id, scope.start, scope.end, run_id)
    with _collector_paced() as collect_young, landing as writer:
        for page in pages:
            if stream.add(page.records):
                collect_young()  # the previous chunk's validation is garbage by now
                stream.refuse(writer.write(stream.validate()))
        if stream.pending:
            collect_young()
            stream.refuse(writer.write(stream.validate()))
        passed = _scope_passed(stream)
        if passed:
            by_day = Counter(day for day, _, _ in stream.rejects if day is not None)
            outcome.held = day_verdicts(writer.counts, by_day, tolerance)
        landed = writer.finish(passed, held=outcome.held)
    outcome.report, outcome.pages, outcome.records, outcome.landed = (
        stream.report, stream.pages, stream.records, stream.valid,
    )  # fmt: skip
    if not landed.passed:  # the whole scope failed its gate: every day is held, with the scope's reason
        reason = gate_reason(outcome.report)
        outcome.held = {day: reason for day in landed.per_date}
    # The loader reads each record's day anyway: its counts spare a second pass over the records.
    outcome.records_by_day.update({day.isoformat(): n for day, n in landed.per_date.items() if n})
    outcome.rejected_by_day.update(day for day, _, _ in stream.rejects if day is not None)
    if outcome.report is None:  # no records in the scope: an empty batch passes
        outcome.report = validate_records(spec, [], tolerance=tolerance)
    # Always called: it also clears the scope's rejects of an earlier run that are no longer rejects.
    outcome.rejected = loader.write_rejects(
        spec, scope.connection_id, stream.rejects, run_id, start=scope.start, end=scope.end
    )
    outcome.seconds = time.monotonic() - started
    return outcome


def _scope_passed(stream: ValidatedStream) -> bool:
    """Whole-scope failures: a schema change, or rejects that belong to no known day beyond the tolerance."""
    report = stream.report
    if report is None:
        return True
    undated = sum(1 for day, _, _ in stream.rejects if day is None)
    return not report.schema_failures and (not undated or undated / report.total <= stream.tolerance)


def gate_reason(report: ValidationReport | None) -> str:
    """Why a scope failed its gate as a whole, in a line."""
    if report is None:
        return "held by the schema check"
    parts = [f"{f['field']}: {f['kind']}" for f in report.schema_failures]
    if report.rejects:
        parts.append(f"{len(report.rejects)} of {report.total} records rejected (tolerance {report.tolerance})")
    return "; ".join(parts) or "held by the schema check"
