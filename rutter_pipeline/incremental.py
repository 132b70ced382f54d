"""Incremental sync of one (connection, entity) by ``updated_at`` (docs/architecture.md §5.5). No Dagster.

Fetch ``updated_at_min = watermark - lag``, validate, upsert (newer ``updated_at`` wins), and advance
the watermark only after the upsert committed. The lag re-reads a window before the watermark so a
record that Rutter committed late, with an ``updated_at`` older than the newest one we saw, is not
skipped; re-reading is harmless because the upsert is idempotent.

Before anything is loaded for a connection and entity there is no watermark: the history backfill
loads the data first, and the first sync starts from the newest ``updated_at`` it stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.ingest import VALIDATION_CHUNK, nul_errors, reject_day
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.validation import Reject, ValidationReport, validate_records
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.partitioning import parse_timestamp
from rutter_pipeline.warehouse.sync_state import get_watermark, set_watermark


@dataclass
class SyncOutcome:
    """What one incremental sync did: for run metadata and to report the partitions that changed."""

    entity: str
    connection_id: str
    since: datetime | None = None
    watermark: datetime | None = None
    records: int = 0
    upserted: int = 0
    rejected: int = 0
    pages: int = 0
    seconds: float = 0.0
    changed_days: frozenset[date] = frozenset()
    skipped: str | None = None
    report: ValidationReport | None = field(default=None, repr=False)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _parse(value: object) -> datetime | None:
    """A record's timestamp, or None for a missing or unreadable one (validation reports those)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def sync_entity(
    client: RutterClient,
    loader: Loader,
    spec: EntitySpec,
    connection_id: str,
    access_token: str,
    run_id: str,
    *,
    lag_minutes: int,
    tolerance: float = 0.0,
) -> SyncOutcome:
    """One ``updated_at_min`` sync; returns what changed. Raises on fetch errors (nothing is advanced)."""
    started = time.monotonic()
    outcome = SyncOutcome(spec.name, connection_id)
    # Set by the connection's first merge (Loader.merge), then advanced by each sync. Not the newest
    # row loaded: a later partial load (a reconnect's gap) holds rows newer than the changes it missed.
    watermark = get_watermark(loader.url, connection_id, spec.name)
    if watermark is None:
        outcome.skipped = "nothing loaded yet for this connection: the history backfill comes first"
        return outcome
    outcome.since = watermark - timedelta(minutes=lag_minutes)
    newest = watermark
    rejects: list[tuple[date | None, dict, list[dict]]] = []

    def valid_records() -> Iterator[dict]:
        nonlocal newest
        batch: list[dict] = []

        def check(batch: list[dict]) -> list[dict]:
            report = validate_records(spec, batch, tolerance=tolerance)
            slim = replace(report, valid=[])
            outcome.report = slim if outcome.report is None else outcome.report.merge(slim)
            rejects.extend((reject_day(spec, r.record), r.record, r.errors) for r in report.rejects)
            return report.valid

        for page in client.iter_updated(spec, access_token, _ms(outcome.since)):
            outcome.pages += 1
            outcome.records += len(page.records)
            for record in page.records:
                seen = _parse(record.get("updated_at")) if isinstance(record, dict) else None
                if seen and seen > newest:
                    newest = seen
            batch.extend(page.records)
            if len(batch) >= VALIDATION_CHUNK:
                yield from check(batch)
                batch = []
        if batch:
            yield from check(batch)
        if outcome.report is not None and not outcome.report.passed:
            # Raised inside the upsert's COPY: its transaction rolls back and nothing is loaded.
            raise SyncRejected(outcome)

    def unstorable(record: dict, paths: list[str]) -> None:
        # A NUL the warehouse cannot store: a reject like a malformed record, weighed by the gate.
        errors = nul_errors(paths)
        rejects.append((reject_day(spec, record), record, errors))
        extra = ValidationReport(spec.name, 0, [], [Reject(record, errors)], [], [], tolerance=tolerance)
        outcome.report = extra if outcome.report is None else outcome.report.merge(extra)

    try:
        stats = loader.upsert(spec, connection_id, valid_records(), run_id, unstorable=unstorable)
    finally:
        if rejects:
            outcome.rejected = loader.write_rejects(spec, connection_id, rejects, run_id)
        outcome.seconds = time.monotonic() - started
    outcome.upserted = stats.inserted + stats.updated
    outcome.changed_days = stats.changed_partitions
    outcome.watermark = set_watermark(loader.url, connection_id, spec.name, newest)
    return outcome


class SyncRejected(Exception):
    """The sync's records failed validation (schema change or too many rejects): nothing was loaded."""

    def __init__(self, outcome: SyncOutcome) -> None:
        report = outcome.report
        assert report is not None
        failures = ", ".join(f"{f['field']} {f['kind']}" for f in report.schema_failures)
        super().__init__(
            f"{outcome.entity} incremental sync of {outcome.connection_id} loaded nothing: "
            + (f"Rutter's schema changed ({failures})" if failures else "")
            + (f"; {len(report.rejects)} of {report.total} records rejected" if report.rejects else "")
            + ". See rutter.rejects; fix the model or raise RUTTER_REJECT_TOLERANCE, then re-run."
        )
        self.outcome = outcome
