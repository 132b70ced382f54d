"""Backfills a sensor can launch: range runs of ``ingest_job`` over one connection's months.

Dagster 1.13 has no public API for a sensor to launch a backfill, so a sensor asks for one run per
chunk of months, each a single-run range (public ``dagster/asset_partition_range_*`` tags): the
same few range runs a UI backfill makes under the assets' BackfillPolicy, with run keys that make a
repeated request harmless. A range that starts or ends inside a month carries the ``rutter/days``
tag, so the run loads exactly those days.
"""

from datetime import date, timedelta

import dagster as dg

from rutter_pipeline.defs.partitions import month_end, range_tags


def month_chunks(start: date, end: date, months: int) -> list[tuple[date, date]]:
    """[start, end] cut at month boundaries into chunks of at most ``months`` months (oldest first)."""
    chunks = []
    day = start
    while day <= end:
        last = day
        for _ in range(months - 1):
            following = month_end(last) + timedelta(days=1)
            if following > end:
                break
            last = following
        last = min(end, month_end(last))
        chunks.append((day, last))
        day = last + timedelta(days=1)
    return chunks


def range_run_requests(
    connection_id: str,
    start: date,
    end: date,
    *,
    reason: str,
    key: str,
    months_per_run: int,
    newest_first: bool = True,
) -> list[dg.RunRequest]:
    """Range runs of ``ingest_job`` covering [start, end] for one connection.

    ``key`` identifies the cause (e.g. the webhook event id) so the same cause never launches twice.
    Newest months first: an underwriter wants the recent months before the old ones.
    """
    if end < start:
        return []
    chunks = month_chunks(start, end, months_per_run)
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
