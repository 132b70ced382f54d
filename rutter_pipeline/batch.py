"""A batch of connections worked on in one process: each connection on a thread, its failure its own.

At 1,000 merchants, one Dagster run per connection costs more in process start, code load and event
writes (3.7-7.3 s a run) than the work of a day or of an incremental sync, so daily loads and syncs
run as a few runs of ``RUTTER_BATCH_SIZE`` connections each. Inside a run, connections go through a
thread pool that shares the process's Rutter client (and so its rate limiter and HTTP pool). What
one connection does never decides what happens to another: each result carries its own status, the
warehouse gets each connection's work in its own transactions, and the caller reports the failures.
No Dagster here: ``defs/batches.py`` turns results into materializations, checks and a run verdict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import date

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.entities import ENTITIES, ORDERS, TRANSACTIONS, EntitySpec
from rutter_pipeline.incremental import SyncRejected, sync_entity
from rutter_pipeline.ingest import Scope, land_scope
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.rutter.redact import redact
from rutter_pipeline.validation import ValidationReport
from rutter_pipeline.warehouse import load_log, marts, underwriting
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.session import reusing_connections, transaction

log = logging.getLogger(__name__)

LOADED, HELD, FAILED, SKIPPED = "loaded", "held", "failed", "skipped"


@dataclass
class EntityResult:
    """One entity of one connection: what was fetched, and whether it reached ``rutter.*``."""

    entity: str
    connection_id: str
    status: str  # loaded | held (the pandera gate) | failed (fetch or merge error) | skipped
    start: date | None = None
    end: date | None = None
    records: int = 0
    landed: int = 0
    rejected: int = 0
    written: int = 0  # rows inserted or updated in rutter.<entity>
    records_by_day: dict[date, int] = field(default_factory=dict)
    # Days the gate held back (status held): the other days of the scope merged unless all are held.
    held_days: frozenset[date] = frozenset()
    changed_days: frozenset[date] = frozenset()  # days whose rows changed (incremental syncs)
    error: str | None = None
    report: ValidationReport | None = field(default=None, repr=False)


@dataclass
class ConnectionResult:
    connection_id: str
    entities: list[EntityResult] = field(default_factory=list)
    error: str | None = None  # a failure before any entity ran (unknown connection, no token)
    seconds: float = 0.0
    # The underwriting marts this connection's work refreshed (``refresh_underwriting``): the months
    # from ``marts_from`` on, or, when the refresh failed, why (the connection then counts as failed).
    marts_from: date | None = None
    marts_error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.marts_error is None
            and all(e.status in (LOADED, SKIPPED) for e in self.entities)
        )

    def problems(self) -> list[str]:
        out = [self.error] if self.error else []
        out += [f"{e.entity} {e.status}: {e.error}" for e in self.entities if e.status in (HELD, FAILED)]
        if self.marts_error:
            out.append(f"underwriting marts not refreshed: {self.marts_error}")
        return out


def _error_text(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")[:500]


def run_batch(
    connection_ids: Sequence[str], work: Callable[[str], ConnectionResult], *, workers: int
) -> Iterator[ConnectionResult]:
    """``work`` for each connection on up to ``workers`` threads; results as they complete.

    An exception escaping ``work`` becomes that connection's error: the others go on.
    """

    def guarded(connection_id: str) -> ConnectionResult:
        started = time.monotonic()
        try:
            with reusing_connections():  # one connection's ~20 transactions share their connections
                result = work(connection_id)
        except Exception as exc:  # one connection's failure is its own (see the module docstring)
            log.warning("connection %s failed: %s", connection_id, _error_text(exc))
            result = ConnectionResult(connection_id, error=_error_text(exc))
        result.seconds = time.monotonic() - started
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(connection_ids))), thread_name_prefix="batch") as pool:
        futures = [pool.submit(guarded, c) for c in connection_ids]
        for future in as_completed(futures):
            yield future.result()


def _specs(entities: Iterable[str] | None) -> list[EntitySpec]:
    return [ENTITIES[name] for name in (entities or ENTITIES)]


def _start(
    registry: ConnectionRegistry, connection_id: str, entities: Iterable[str] | None
) -> tuple[ConnectionResult, str | None]:
    """A fresh result and the connection's token; no token (every entity skipped) when it is not live:
    a connection paused between the schedule's tick and this run gets no requests."""
    result = ConnectionResult(connection_id)
    connection = registry.get(connection_id)
    if not connection.live:
        result.entities = [
            EntityResult(s.name, connection_id, SKIPPED, error=connection.state) for s in _specs(entities)
        ]
        return result, None
    return result, registry.access_token(connection_id)


def load_days(
    client: RutterClient,
    loader: Loader,
    registry: ConnectionRegistry,
    connection_id: str,
    start: date,
    end: date,
    run_id: str,
    *,
    entities: Iterable[str] | None = None,
    tolerance: float = 0.0,
    reporting_currency: str = "USD",
) -> ConnectionResult:
    """Land, gate and merge ``[start, end]`` of one connection, entity by entity; record each day.

    An entity whose gate fails is held: the failing days (all of them on a schema change) are
    recorded ``held`` and not merged, its other days merge. One that fails to fetch or merge is
    recorded ``failed`` and leaves ``rutter.<entity>`` as it was. The other entities still load.
    ``marts.daily_sales`` is refreshed when orders were merged, the underwriting marts at the end.
    """
    result, token = _start(registry, connection_id, entities)
    if token is None:
        return result
    scope = Scope(connection_id, start, end)
    merged: list[str] = []
    for spec in _specs(entities):
        item = EntityResult(spec.name, connection_id, FAILED, start=start, end=end)
        result.entities.append(item)
        try:
            outcome = land_scope(client, loader, spec, scope, token, run_id, tolerance=tolerance)
            item.records, item.landed, item.rejected = outcome.records, outcome.landed, outcome.rejected
            item.records_by_day = {date.fromisoformat(d): n for d, n in outcome.records_by_day.items()}
            item.report = outcome.report
            item.held_days = frozenset(outcome.held)
            if len(outcome.held) < scope.days:  # some day passed: merge those
                stats = loader.merge(spec, connection_id, start, end, run_id, skip_held=True)
                item.written = stats.written
                merged.append(spec.name)
                if spec is ORDERS:
                    _refresh_daily_sales(loader, connection_id, start, end)
            item.status = LOADED if outcome.passed else HELD
            if not outcome.passed:
                reasons = sorted(set(outcome.held.values()))
                item.error = f"held {_day_list(sorted(outcome.held))}: {'; '.join(reasons[:3])}"
            loads = load_log.day_loads(
                connection_id, spec.name, start, end, status=LOADED,
                landed_by_day=item.records_by_day, rejected_by_day=outcome.rejected_by_day,
            )  # fmt: skip
            held = [replace(d, status=HELD, error=outcome.held[d.day]) for d in loads if d.day in outcome.held]
            load_log.record(loader.url, [d for d in loads if d.day not in outcome.held] + held, run_id)
        except Exception as exc:
            item.status, item.error = FAILED, _error_text(exc)
            log.warning("%s of %s %s..%s failed: %s", spec.name, connection_id, start, end, item.error)
            load_log.mark_failed(loader.url, connection_id, spec.name, start, end, run_id, item.error)
    refresh_underwriting(loader, result, [(name, start, end) for name in merged], reporting_currency)
    return result


def sync_connection(
    client: RutterClient,
    loader: Loader,
    registry: ConnectionRegistry,
    connection_id: str,
    run_id: str,
    *,
    entities: Iterable[str] | None = None,
    lag_minutes: int,
    tolerance: float = 0.0,
    reporting_currency: str = "USD",
) -> ConnectionResult:
    """An ``updated_at_min`` sync of each entity of one connection (its watermark moves only on success)."""
    result, token = _start(registry, connection_id, entities)
    if token is None:
        return result
    for spec in _specs(entities):
        item = EntityResult(spec.name, connection_id, FAILED)
        result.entities.append(item)
        try:
            outcome = sync_entity(
                client, loader, spec, connection_id, token, run_id,
                warehouse_url=loader.url, lag_minutes=lag_minutes, tolerance=tolerance,
            )  # fmt: skip
            item.records, item.rejected, item.written = outcome.records, outcome.rejected, outcome.upserted
            item.changed_days = outcome.changed_days
            item.report = outcome.report
            item.status = SKIPPED if outcome.skipped else LOADED
            item.error = outcome.skipped
            if spec is ORDERS and outcome.changed_days:
                _refresh_daily_sales(loader, connection_id, min(outcome.changed_days), max(outcome.changed_days))
        except SyncRejected as exc:
            item.status, item.error, item.report = HELD, _error_text(exc), exc.outcome.report
            item.records, item.rejected = exc.outcome.records, exc.outcome.rejected
        except Exception as exc:
            item.status, item.error = FAILED, _error_text(exc)
            log.warning("%s sync of %s failed: %s", spec.name, connection_id, item.error)
    changed = [(e.entity, min(e.changed_days), max(e.changed_days)) for e in result.entities if e.changed_days]
    refresh_underwriting(loader, result, changed, reporting_currency)
    return result


def refresh_underwriting(
    loader: Loader, result: ConnectionResult, spans: list[tuple[str, date, date]], reporting_currency: str
) -> None:
    """Refresh ``marts.monthly_metrics`` (orders or transactions changed) and ``marts.cohort_retention``
    (orders changed) of one connection, after all its entities, in one transaction.

    A batch refreshes its connections' marts itself, and reports them, rather than leave them to the
    marts' automation: that would ask for a run per connection after every batch, a thousand runs
    every 15 minutes at 1,000 connections, each costing a run's start-up and holding a run slot the
    ingestion runs wait for. The automation ignores what batches write (``defs/marts.py``), so a
    failed refresh fails the connection instead: its loads stand, the run fails naming it, and the
    marts' partitions show failed until re-run.
    """
    by_entity = {entity: (start, end) for entity, start, end in spans}
    metric_spans = [by_entity[e] for e in (ORDERS.name, TRANSACTIONS.name) if e in by_entity]
    if not metric_spans:
        return
    start, end = min(s for s, _ in metric_spans), max(e for _, e in metric_spans)
    try:
        with transaction(loader.url) as conn:
            underwriting.refresh_monthly_metrics(conn, result.connection_id, start, end, reporting_currency)
            if ORDERS.name in by_entity:
                underwriting.refresh_cohort_retention(conn, result.connection_id, by_entity[ORDERS.name][1])
    except Exception as exc:
        result.marts_error = _error_text(exc)
        log.warning("underwriting marts of %s not refreshed: %s", result.connection_id, result.marts_error)
    else:
        result.marts_from = start


def _refresh_daily_sales(loader: Loader, connection_id: str, start: date, end: date) -> None:
    with transaction(loader.url) as conn:
        marts.refresh_daily_sales(conn, connection_id, start, end)


def _day_list(days: Sequence[date]) -> str:
    shown = ", ".join(d.isoformat() for d in days[:5])
    return shown + (f" and {len(days) - 5} more" if len(days) > 5 else "")
