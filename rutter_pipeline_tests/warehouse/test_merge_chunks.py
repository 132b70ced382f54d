"""A range merge worked through in runs of days (``MERGE_CHUNK_RECORDS``), one after the other or on
several connections at once (``merge_workers``), gives the tables of a one-run merge."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise
from typing import Any

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse import merge as merge_module
from rutter_pipeline.warehouse.chunks import chunks as _chunks
from rutter_pipeline.warehouse.errors import PartitionNotLanded
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.partitioning import parse_timestamp
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline.warehouse.results import MergeStats
from rutter_pipeline.warehouse.sync_state import get_watermark
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

DAYS = [date(2024, 3, 4) + timedelta(days=i) for i in range(5)]


def _merge(loader: Loader, conn: str, orders: list[dict[str, Any]], run: str) -> MergeStats:
    loader.land(ORDERS, conn, DAYS[0], DAYS[-1], [orders], run)
    return loader.merge(ORDERS, conn, DAYS[0], DAYS[-1], run)


def _counts(stats: MergeStats) -> tuple[int, ...]:
    items = stats.children["order_line_items"]
    return stats.inserted, stats.updated, stats.unchanged, stats.deleted, items.inserted, items.deleted


def _stored(url: str, conn: str) -> list[dict[str, Any]]:
    return sorted(read_records(url, ORDERS, conn, DAYS[0], DAYS[-1]), key=lambda r: r["id"])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_chunked_merge_equals_one_run_merge(
    workers: int, warehouse: str, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = Loader(warehouse, merge_workers=workers)
    # Day 2 stays empty; the others get 1..4 orders, so chunks of 3 records split the range 3 ways.
    orders = [records.order(day) for n, day in enumerate(DAYS) if n != 2 for _ in range(n or 1)]
    one_run = _merge(loader, "whole", orders, "run-1")
    monkeypatch.setattr(merge_module, "MERGE_CHUNK_RECORDS", 3)
    chunked = _merge(loader, "chunked", orders, "run-1")
    assert _counts(chunked) == _counts(one_run) == (len(orders), 0, 0, 0, sum(len(o["line_items"]) for o in orders), 0)
    assert _stored(warehouse, "chunked") == _stored(warehouse, "whole") == sorted(orders, key=lambda r: r["id"])
    # The first merge starts the incremental sync at the newest version it merged, whichever chunk had it.
    newest = max(parse_timestamp(o["updated_at"]) for o in orders)
    assert get_watermark(warehouse, "chunked", "orders") == get_watermark(warehouse, "whole", "orders") == newest

    # Rutter drops an order of the first and of the last day and changes one in the middle.
    changed = dict(orders[3], status="archived", updated_at="2024-03-09T00:00:00.000Z")
    later = [changed, *orders[1:3], *orders[4:-1]]
    monkeypatch.setattr(merge_module, "MERGE_CHUNK_RECORDS", 10**9)
    one_run = _merge(loader, "whole", later, "run-2")
    monkeypatch.setattr(merge_module, "MERGE_CHUNK_RECORDS", 3)
    chunked = _merge(loader, "chunked", later, "run-2")
    dropped_items = len(orders[0]["line_items"]) + len(orders[-1]["line_items"])
    assert chunked.deleted == 2
    assert _counts(chunked) == _counts(one_run)
    assert chunked.children["order_line_items"].deleted == one_run.children["order_line_items"].deleted
    assert one_run.children["order_line_items"].deleted >= dropped_items
    assert _stored(warehouse, "chunked") == _stored(warehouse, "whole") == sorted(later, key=lambda r: r["id"])
    # A later merge leaves the watermark to the incremental sync, though it merged a newer version.
    assert get_watermark(warehouse, "chunked", "orders") == newest < parse_timestamp(changed["updated_at"])


def test_chunks_cover_the_range_once_within_the_budget() -> None:
    per_day = {DAYS[0]: 2, DAYS[1]: 2, DAYS[2]: 0, DAYS[3]: 9, DAYS[4]: 1}
    chunks = list(_chunks(DAYS, per_day, 4))
    assert chunks == [(DAYS[0], DAYS[2]), (DAYS[3], DAYS[3]), (DAYS[4], DAYS[4])]
    assert list(_chunks(DAYS, per_day, 10**6)) == [(DAYS[0], DAYS[-1])]
    assert list(_chunks(DAYS[:1], {}, 1)) == [(DAYS[0], DAYS[0])]


@pytest.mark.parametrize(
    ("days", "workers", "expected"), [(73, 1, 5), (73, 2, 6), (62, 2, 4), (183, 2, 12), (10, 2, 1)]
)
def test_chunks_are_even_and_a_multiple_of_the_workers(days: int, workers: int, expected: int) -> None:
    # A year of 1M orders (~2,740 a day) in range runs of 62 or 183 days (the default), against the
    # default budget.
    span = [DAYS[0] + timedelta(days=i) for i in range(days)]
    per_day = dict.fromkeys(span, 2_740)
    chunks = list(_chunks(span, per_day, 50_000, workers))
    assert len(chunks) == expected
    assert chunks[0][0] == span[0] and chunks[-1][1] == span[-1]
    assert all(b[0] - a[1] == timedelta(days=1) for a, b in pairwise(chunks))
    sizes = [sum(per_day[d] for d in span if first <= d <= last) for first, last in chunks]
    # Even to within a day, where the old greedy split left 170k orders as 49k, 49k, 49k and 22k.
    assert max(sizes) - min(sizes) <= 2_740, sizes


def test_a_failing_chunk_leaves_each_day_before_or_after_and_a_rerun_completes(
    warehouse: str, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = Loader(warehouse, merge_workers=2)
    monkeypatch.setattr(merge_module, "MERGE_CHUNK_RECORDS", 2)
    orders = [records.order(day) for day in DAYS for _ in range(2)]
    loader.land(ORDERS, "c", DAYS[0], DAYS[-1], [orders], "run-1")
    # The landing of day 3 loses a row behind the batches' back: that chunk must refuse to merge.
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "DELETE FROM landing.orders WHERE ctid = (SELECT ctid FROM landing.orders WHERE partition_date = %s "
            "LIMIT 1)",
            (DAYS[3],),
        )
    with pytest.raises(PartitionNotLanded, match="the landing holds 1 records but its batches recorded 2"):
        loader.merge(ORDERS, "c", DAYS[0], DAYS[-1], "run-1")
    for day in DAYS:
        stored = sorted(r["id"] for r in read_records(warehouse, ORDERS, "c", day, day))
        expected = sorted(o["id"] for o in orders if o["created_at"].startswith(day.isoformat()))
        assert stored in ([], expected), day  # whole days only
        if day == DAYS[3]:
            assert stored == []

    loader.land(ORDERS, "c", DAYS[0], DAYS[-1], [orders], "run-2")
    again = loader.merge(ORDERS, "c", DAYS[0], DAYS[-1], "run-2")
    assert again.inserted + again.unchanged == len(orders) and again.deleted == 0
    assert _stored(warehouse, "c") == sorted(orders, key=lambda r: r["id"])
