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
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.ingest import ValidatedStream
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.validation import ValidationReport
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
    warehouse_url: str,
    lag_minutes: int,
    tolerance: float = 0.0,
) -> SyncOutcome:
    """One ``updated_at_min`` sync; returns what changed. Raises on fetch errors (nothing is advanced).

    The valid records are COPYed as they are validated; when the sync's records fail validation
    (a schema change, or rejects beyond the tolerance) the upsert is rolled back, the rejects are
    stored and :class:`SyncRejected` says why. The watermark is read from and advanced in
    ``warehouse_url``'s ``rutter.sync_state``.
    """
    started = time.monotonic()
    outcome = SyncOutcome(spec.name, connection_id)
    # Set by the connection's first merge (warehouse.merge), then advanced by each sync. Not the newest
    # row loaded: a later partial load (a reconnect's gap) holds rows newer than the changes it missed.
    watermark = get_watermark(warehouse_url, connection_id, spec.name)
    if watermark is None:
        outcome.skipped = "nothing loaded yet for this connection: the history backfill comes first"
        return outcome
    outcome.since = watermark - timedelta(minutes=lag_minutes)
    newest = watermark
    stream = ValidatedStream(spec, tolerance)
    try:
        with loader.upserting(spec, connection_id, run_id) as writer:
            for page in client.iter_updated(spec, access_token, _ms(outcome.since)):
                for record in page.records:
                    seen = _parse(record.get("updated_at")) if isinstance(record, dict) else None
                    if seen and seen > newest:
                        newest = seen
                if stream.add(page.records):
                    stream.refuse(writer.write(stream.validate()))
            if stream.pending:
                stream.refuse(writer.write(stream.validate()))
            stats = writer.finish(stream.passed)  # None: rolled back, nothing loaded
    finally:
        outcome.report, outcome.pages, outcome.records = stream.report, stream.pages, stream.records
        if stream.rejects:
            outcome.rejected = loader.write_rejects(spec, connection_id, stream.rejects, run_id)
        outcome.seconds = time.monotonic() - started
    if stats is None:
        raise SyncRejected(outcome)
    outcome.upserted = stats.inserted + stats.updated
    outcome.changed_days = stats.changed_partitions
    outcome.watermark = set_watermark(warehouse_url, connection_id, spec.name, newest)
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
