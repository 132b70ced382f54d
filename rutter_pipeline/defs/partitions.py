"""The partition shape, kept in one place: UTC calendar month x connection.

Why months: Dagster advises at most 100,000 partitions per asset, and its partition-status cache is
rebuilt in full whenever a connection is added (the dynamic dimension's identity hashes every key).
Day x connection passes the ceiling at ~137 connections with two years of history and cost 40-49 s
per new connection at 500 (shared/reference/dagster-scale-study.md). Month x connection is 25
partitions per connection-history of two years: 25,000 per asset at 1,000 connections, and a rebuild
per new connection of about a second per asset (benchmarks/RESULTS.md). A data engineer still sees
each merchant's months as a row of the partition matrix, re-runs one connection's month, and
backfills one connection's history by selecting its row. Per-day truth (what each day of each
merchant holds) is the coverage table ``rutter.load_log``, readable with SQL whatever the shape.

Every asset, check and job is built from ``ingest_partitions()`` and the rest of the code only sees
``Scope``s: (connection, first day, last day).
"""

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from rutter_pipeline.ingest import Scope
from rutter_pipeline.settings import Settings

CONNECTIONS_NAME = "connections"
CONNECTIONS = dg.DynamicPartitionsDefinition(name=CONNECTIONS_NAME)
KEY_DELIMITER = "|"
# A run of the ingest assets may carry this tag ("YYYY-MM-DD" or "YYYY-MM-DD..YYYY-MM-DD") to load
# only those days of its partitions: re-running one connection's day from the launchpad.
DAYS_TAG = "rutter/days"


def ingest_partitions(settings: Settings) -> dg.MultiPartitionsDefinition:
    """``month`` (monthly, UTC, from RUTTER_HISTORY_START's month) x ``connection`` (dynamic).

    Dimensions sort by name, so a key string reads ``"<connection_id>|<YYYY-MM-01>"``. The current
    month is a partition too (``end_offset=1``): daily loads and incremental syncs keep it fresh.
    """
    return dg.MultiPartitionsDefinition(
        {
            "month": dg.MonthlyPartitionsDefinition(
                start_date=settings.history_start.replace(day=1).isoformat(), timezone="UTC", end_offset=1
            ),
            "connection": CONNECTIONS,
        }
    )


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    first_of_next = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first_of_next - timedelta(days=1)


def partition_key(connection_id: str, day: date) -> dg.MultiPartitionKey:
    """The key of the partition (the connection's month) that holds ``day``."""
    return dg.MultiPartitionKey({"connection": connection_id, "month": month_start(day).isoformat()})


def range_tags(connection_id: str, start: date, end: date) -> dict[str, str]:
    """Tags that make one run cover the months of ``[start, end]`` of one connection (a range run).

    When ``[start, end]`` does not cover whole months, the ``rutter/days`` tag narrows the run to it.
    """
    tags = {
        "dagster/asset_partition_range_start": str(partition_key(connection_id, start)),
        "dagster/asset_partition_range_end": str(partition_key(connection_id, end)),
        "rutter/connection": connection_id,
    }
    if start != month_start(start) or end != month_end(end):
        tags[DAYS_TAG] = f"{start.isoformat()}..{end.isoformat()}"
    return tags


def parse_key(key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(connection id, first day of the month) of a partition key."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["connection"], date.fromisoformat(dims["month"])
    connection_id, _, month = str(key).rpartition(KEY_DELIMITER)
    if not connection_id:
        raise ValueError(f"not a '<connection_id>|<YYYY-MM-01>' partition key: {key!r}")
    return connection_id, date.fromisoformat(month)


def parse_days(value: str | None) -> tuple[date, date] | None:
    """The ``rutter/days`` tag: ``"YYYY-MM-DD"`` or ``"YYYY-MM-DD..YYYY-MM-DD"``; None when absent."""
    if not value:
        return None
    first, _, last = value.partition("..")
    try:
        start, end = date.fromisoformat(first.strip()), date.fromisoformat((last or first).strip())
    except ValueError as exc:
        raise ValueError(f"{DAYS_TAG} must be YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD, got {value!r}") from exc
    if end < start:
        raise ValueError(f"{DAYS_TAG} ends before it starts: {value!r}")
    return start, end


def _today() -> date:
    return datetime.now(UTC).date()


def scopes_for(
    keys: Iterable[str | dg.MultiPartitionKey],
    *,
    history_start: date,
    days: tuple[date, date] | None = None,
    today: date | None = None,
) -> list[Scope]:
    """Contiguous day ranges per connection covered by the partition keys.

    A month is clipped to ``[history_start, today]`` (the first month may start mid-month, the
    current one is not over), or to ``days`` when a run names them: days asked for by name are
    loaded even past today's date here (Rutter's clock, not ours, decides what exists). A range run
    may cover several connections (Dagster cuts ranges along the dimension with fewer keys), so an
    asset handles a list of scopes, not one.
    """
    today = today or _today()
    lower, upper = history_start, today
    if days:
        lower, upper = max(lower, days[0]), days[1]
    months_by_connection: dict[str, set[date]] = {}
    for key in keys:
        connection_id, month = parse_key(key)
        months_by_connection.setdefault(connection_id, set()).add(month)
    scopes: list[Scope] = []
    for connection_id in sorted(months_by_connection):
        spans: list[tuple[date, date]] = []
        for month in sorted(months_by_connection[connection_id]):
            start, end = max(month, lower), min(month_end(month), upper)
            if start > end:
                continue
            if spans and spans[-1][1] + timedelta(days=1) == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        scopes.extend(Scope(connection_id, start, end) for start, end in spans)
    return scopes
