"""The partition shape, kept in one place (DESIGN §4.3 and §6).

Assets are partitioned by UTC day x connection. Large deployments will need another shape
(sharding connections across asset sets, or a monthly history asset next to a short daily window),
so every asset, check and job is built from ``ingest_partitions()`` through one factory and the rest
of the code only sees ``Scope``s: (connection, first day, last day).
"""

from collections.abc import Iterable
from datetime import date, timedelta

import dagster as dg

from rutter_pipeline.ingest import Scope
from rutter_pipeline.settings import Settings

CONNECTIONS = dg.DynamicPartitionsDefinition(name="connections")
KEY_DELIMITER = "|"


def ingest_partitions(settings: Settings | None = None) -> dg.MultiPartitionsDefinition:
    """``date`` (daily, UTC, from RUTTER_HISTORY_START) x ``connection`` (dynamic).

    Dimensions sort by name, so a key string reads ``"<connection_id>|<YYYY-MM-DD>"``. Today is a
    partition too (``end_offset=1``): incremental syncs keep it fresh during the day, and the daily
    schedule re-loads it, complete, shortly after midnight UTC.
    """
    settings = settings or Settings.from_env()
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(
                start_date=settings.history_start.isoformat(), timezone="UTC", end_offset=1
            ),
            "connection": CONNECTIONS,
        }
    )


def partition_key(connection_id: str, day: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"connection": connection_id, "date": day.isoformat()})


def range_tags(connection_id: str, start: date, end: date) -> dict[str, str]:
    """Tags that make one run cover many days of one connection (a single-run backfill range)."""
    return {
        "dagster/asset_partition_range_start": str(partition_key(connection_id, start)),
        "dagster/asset_partition_range_end": str(partition_key(connection_id, end)),
        "rutter/connection": connection_id,
    }


def parse_key(key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["connection"], date.fromisoformat(dims["date"])
    connection_id, _, day = str(key).rpartition(KEY_DELIMITER)
    if not connection_id:
        raise ValueError(f"not a '<connection_id>|<YYYY-MM-DD>' partition key: {key!r}")
    return connection_id, date.fromisoformat(day)


def scopes_for(keys: Iterable[str | dg.MultiPartitionKey]) -> list[Scope]:
    """Group partition keys into contiguous day ranges per connection.

    A backfill range run may cover several connections (Dagster cuts ranges along the dimension
    with fewer keys), so an asset handles a list of scopes, not one.
    """
    days_by_connection: dict[str, set[date]] = {}
    for key in keys:
        connection_id, day = parse_key(key)
        days_by_connection.setdefault(connection_id, set()).add(day)
    scopes: list[Scope] = []
    for connection_id in sorted(days_by_connection):
        days = sorted(days_by_connection[connection_id])
        start = prev = days[0]
        for day in days[1:]:
            if day != prev + timedelta(days=1):
                scopes.append(Scope(connection_id, start, prev))
                start = day
            prev = day
        scopes.append(Scope(connection_id, start, prev))
    return scopes
