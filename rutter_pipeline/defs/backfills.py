"""Backfills a sensor can launch: range runs of ``ingest_job`` over one connection's days.

Dagster 1.13 has no public API for a sensor to launch a backfill (DESIGN §6), so a sensor asks for
one run per chunk of days, each a single-run range (public ``dagster/asset_partition_range_*`` tags):
the same few range runs a UI backfill makes under the assets' BackfillPolicy, with run keys that make
a repeated request harmless.
"""

from datetime import date, timedelta

import dagster as dg

from rutter_pipeline.defs.ingest import BACKFILL_DAYS_PER_RUN
from rutter_pipeline.defs.partitions import range_tags


def day_chunks(start: date, end: date, size: int = BACKFILL_DAYS_PER_RUN) -> list[tuple[date, date]]:
    """[start, end] cut into consecutive chunks of at most ``size`` days (newest last)."""
    chunks = []
    day = start
    while day <= end:
        last = min(end, day + timedelta(days=size - 1))
        chunks.append((day, last))
        day = last + timedelta(days=1)
    return chunks


def range_run_requests(
    connection_id: str, start: date, end: date, *, reason: str, key: str, newest_first: bool = True
) -> list[dg.RunRequest]:
    """Range runs of ``ingest_job`` covering [start, end] for one connection.

    ``key`` identifies the cause (e.g. the webhook event id) so the same cause never launches twice.
    Newest days first: an underwriter wants the recent months before the old ones.
    """
    if end < start:
        return []
    chunks = day_chunks(start, end)
    if newest_first:
        chunks.reverse()
    return [
        dg.RunRequest(
            job_name="ingest_job",
            run_key=f"{reason}:{connection_id}:{a.isoformat()}:{b.isoformat()}:{key}",
            tags={**range_tags(connection_id, a, b), "rutter/trigger": reason},
        )
        for a, b in chunks
    ]
