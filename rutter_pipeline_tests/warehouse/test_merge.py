"""Merge semantics (docs/architecture.md §5.3): idempotent, newer wins, deletes what Rutter dropped, gated
by validation."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from rutter_pipeline.entities import ORDERS, PRODUCTS
from rutter_pipeline.warehouse.errors import (
    LandingNotValidated,
    MissingPartitionField,
    PartitionNotLanded,
    RecordOutsidePartition,
)
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline_tests.warehouse.conftest import snapshot
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

D1, D2, D3 = date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 6)


def _land_merge(loader: Loader, orders: list[dict[str, Any]], start: date, end: date, run: str, conn: str = "c1"):  # type: ignore[no-untyped-def]
    loader.land(ORDERS, conn, start, end, [orders], run)
    return loader.merge(ORDERS, conn, start, end, run)


def _later(record: dict[str, Any], minutes: int, **changes: Any) -> dict[str, Any]:
    from rutter_pipeline.warehouse.partitioning import parse_timestamp
    from rutter_pipeline_tests.warehouse.factories import iso

    return dict(record, updated_at=iso(parse_timestamp(record["updated_at"]) + timedelta(minutes=minutes)), **changes)


def test_rerun_changes_nothing(warehouse: str, loader: Loader, records: Records) -> None:
    orders = [records.order(D1) for _ in range(20)] + [records.order(D2) for _ in range(10)]
    first = _land_merge(loader, orders, D1, D2, "run-1")
    assert (first.inserted, first.updated, first.deleted) == (30, 0, 0)
    assert first.children["order_line_items"].inserted == sum(len(o["line_items"]) for o in orders)
    before = snapshot(warehouse)
    again = _land_merge(loader, orders[::-1], D1, D2, "run-2")  # same records, another order and run
    assert (again.inserted, again.updated, again.unchanged, again.deleted) == (0, 0, 30, 0)
    assert again.children["order_line_items"].inserted == 0 == again.children["order_line_items"].deleted
    assert snapshot(warehouse) == before  # _loaded_at and _run_id untouched too


def test_changed_record_is_rewritten_with_its_children(warehouse: str, loader: Loader, records: Records) -> None:
    orders = [records.order(D1) for _ in range(3)]
    _land_merge(loader, orders, D1, D1, "run-1")
    changed = _later(orders[0], 5, status="archived", line_items=[records.line_item(D1)])
    stats = _land_merge(loader, [changed, *orders[1:]], D1, D1, "run-2")
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 1, 2)
    assert stats.children["order_line_items"].deleted == len(orders[0]["line_items"])
    assert stats.children["order_line_items"].inserted == 1
    got = {r["id"]: r for r in read_records(warehouse, ORDERS, "c1")}
    assert got[changed["id"]] == changed
    with psycopg.connect(warehouse) as conn:
        runs = dict(conn.execute("SELECT id, _run_id FROM rutter.orders").fetchall())
    assert runs == {orders[0]["id"]: "run-2", orders[1]["id"]: "run-1", orders[2]["id"]: "run-1"}


def test_older_version_never_overwrites_a_newer_one(warehouse: str, loader: Loader, records: Records) -> None:
    order = records.order(D1)
    newer = _later(order, 60, status="archived")
    # the incremental sync stored the newer version first...
    loader.upsert(ORDERS, "c1", [newer], "incremental")
    # ...then the daily partition landed an older read of the same order
    stats = _land_merge(loader, [order], D1, D1, "daily")
    assert (stats.stale, stats.updated, stats.unchanged, stats.deleted) == (1, 0, 1, 0)
    assert list(read_records(warehouse, ORDERS, "c1")) == [newer]
    # same updated_at but different content: the landing is the latest word
    same_time = dict(newer, payment_status="refunded")
    stats = _land_merge(loader, [same_time], D1, D1, "daily-2")
    assert stats.updated == 1
    assert list(read_records(warehouse, ORDERS, "c1")) == [same_time]


def test_duplicates_in_a_landing_keep_the_newest(warehouse: str, loader: Loader, records: Records) -> None:
    order = records.order(D1)
    newer = _later(order, 1, status="archived")
    stats = _land_merge(loader, [newer, order, newer], D1, D1, "run-1")
    assert (stats.inserted, stats.unchanged) == (1, 0)
    assert list(read_records(warehouse, ORDERS, "c1")) == [newer]


def test_dropped_records_are_deleted_only_in_their_partition_and_connection(
    warehouse: str, loader: Loader, records: Records
) -> None:
    d1 = [records.order(D1) for _ in range(4)]
    d2 = [records.order(D2) for _ in range(3)]
    d3 = [records.order(D3) for _ in range(2)]
    _land_merge(loader, d1 + d2 + d3, D1, D3, "run-1")
    other_conn = [records.order(D2) for _ in range(2)]
    _land_merge(loader, other_conn, D2, D2, "run-1", conn="c2")
    loader.land(PRODUCTS, "c1", D2, D2, [[records.product(D2)]], "run-1")
    loader.merge(PRODUCTS, "c1", D2, D2, "run-1")

    stats = _land_merge(loader, d2[1:], D2, D2, "run-2")  # Rutter no longer returns d2[0]
    assert (stats.deleted, stats.unchanged) == (1, 2)
    assert stats.children["order_line_items"].deleted == len(d2[0]["line_items"])
    with psycopg.connect(warehouse) as conn:
        ids = {(c, i) for c, i in conn.execute("SELECT connection_id, id FROM rutter.orders").fetchall()}
        orphans = conn.execute(
            "SELECT count(*) FROM rutter.order_line_items WHERE order_id = %s", (d2[0]["id"],)
        ).fetchone()
        products = conn.execute("SELECT count(*) FROM rutter.products").fetchone()
    assert ids == {("c1", o["id"]) for o in d1 + d2[1:] + d3} | {("c2", o["id"]) for o in other_conn}
    assert orphans == (0,)
    assert products == (1,)

    # an empty day is a real answer: everything of that day goes, nothing else
    stats = _land_merge(loader, [], D3, D3, "run-3")
    assert stats.deleted == 2
    assert len(list(read_records(warehouse, ORDERS, "c1"))) == len(d1) + len(d2) - 1


def test_a_range_that_held_rows_on_any_day_is_not_merged_as_a_first_load(
    warehouse: str, loader: Loader, records: Records
) -> None:
    """The merge skips its deletes only when the whole range was empty: here D1 held rows, D2 none."""
    kept, dropped = records.order(D1), records.order(D1)
    _land_merge(loader, [kept, dropped], D1, D1, "run-1")
    new = records.order(D2)
    stats = _land_merge(loader, [kept, new], D1, D2, "run-2")  # Rutter no longer returns `dropped`
    assert (stats.inserted, stats.unchanged, stats.deleted) == (1, 1, 1)
    assert stats.children["order_line_items"].deleted == len(dropped["line_items"])
    assert {r["id"] for r in read_records(warehouse, ORDERS, "c1")} == {kept["id"], new["id"]}


def test_rows_written_after_the_landing_are_not_deleted_by_it(warehouse: str, loader: Loader, records: Records) -> None:
    early, late = records.order(D1), records.order(D1)
    _land_merge(loader, [early], D1, D1, "daily-1")
    loader.land(ORDERS, "c1", D1, D1, [[early]], "daily-2")  # this landing was read before `late` existed
    loader.upsert(ORDERS, "c1", [late], "incremental")  # ...which an incremental sync stores meanwhile
    stats = loader.merge(ORDERS, "c1", D1, D1, "daily-2")
    assert (stats.deleted, stats.unchanged) == (0, 1)
    assert {r["id"] for r in read_records(warehouse, ORDERS, "c1")} == {early["id"], late["id"]}
    # a landing taken afterwards that still lacks it does remove it
    stats = _land_merge(loader, [early], D1, D1, "daily-3")
    assert stats.deleted == 1


def test_merge_refuses_a_landing_that_failed_validation(warehouse: str, loader: Loader, records: Records) -> None:
    good = [records.order(D1) for _ in range(3)]
    _land_merge(loader, good, D1, D1, "run-1")
    before = snapshot(warehouse)
    bad = [records.order(D1)]
    # The validator's verdict comes after the records were written, as in ingest.land_scope.
    with loader.landing(ORDERS, "c1", D1, D1, "run-bad") as writer:
        assert writer.write(bad) == []
        stats = writer.finish(passed=False)
    assert stats.passed is False and stats.total == 1
    with pytest.raises(LandingNotValidated, match=r"2024-03-04 \(run run-bad\) failed validation"):
        loader.merge(ORDERS, "c1", D1, D1, "run-bad")
    assert snapshot(warehouse) == before
    loader.land(ORDERS, "c1", D1, D1, [bad], "run-fixed", passed=True)
    assert loader.merge(ORDERS, "c1", D1, D1, "run-fixed").inserted == 1


def test_merge_refuses_days_that_were_never_landed(warehouse: str, loader: Loader, records: Records) -> None:
    _land_merge(loader, [records.order(D1)], D1, D1, "run-1")
    with pytest.raises(PartitionNotLanded, match="no landing for 2024-03-05"):
        loader.merge(ORDERS, "c1", D1, D2, "run-2")
    with pytest.raises(PartitionNotLanded):
        loader.merge(ORDERS, "other-connection", D1, D1, "run-2")


def test_land_replaces_the_partition_and_rejects_strays(warehouse: str, loader: Loader, records: Records) -> None:
    first = loader.land(ORDERS, "c1", D1, D2, [[records.order(D1), records.order(D2)], [records.order(D2)]], "r1")
    assert first.per_date == {D1: 1, D2: 2} and first.total == 3
    second = loader.land(ORDERS, "c1", D2, D2, [[records.order(D2)]], "r2")
    assert second.per_date == {D2: 1}
    with psycopg.connect(warehouse) as conn:
        landed = dict(conn.execute("SELECT partition_date, count(*) FROM landing.orders GROUP BY 1").fetchall())
        assert landed == {D1: 1, D2: 1}
        before = conn.execute("SELECT record FROM landing.orders ORDER BY 1").fetchall()
    stray = records.order(D3)
    with pytest.raises(RecordOutsidePartition, match="belongs to 2024-03-06, outside the partition range"):
        loader.land(ORDERS, "c1", D1, D2, [[records.order(D1)], [stray]], "r3")
    undated = records.order(D1) | {"created_at": None}
    with pytest.raises(MissingPartitionField):
        loader.land(ORDERS, "c1", D1, D1, [[undated]], "r4")
    with psycopg.connect(warehouse) as conn:  # the failed landings changed nothing
        assert conn.execute("SELECT record FROM landing.orders ORDER BY 1").fetchall() == before
        batches = conn.execute("SELECT partition_date, run_id, record_count FROM landing.batches ORDER BY 1")
        assert batches.fetchall() == [(D1, "r1", 1), (D2, "r2", 1)]


def test_landing_streams_pages_in_flat_memory(warehouse: str, loader: Loader, records: Records) -> None:
    total_bytes = 0

    def pages() -> Iterator[list[dict[str, Any]]]:
        nonlocal total_bytes
        for _ in range(40):
            page = [records.order(D1) for _ in range(100)]
            total_bytes += sum(len(orjson.dumps(o)) for o in page)
            yield page

    tracemalloc.start()
    try:
        stats = loader.land(ORDERS, "c1", D1, D1, pages(), "big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.total == 4000
    # ~9 MB of JSON went through; the loader held about one page at a time
    assert total_bytes > 8_000_000
    assert peak < total_bytes / 4, (peak, total_bytes)


def test_a_first_load_counts_stale_records_without_probing_the_table(
    warehouse: str, loader: Loader, records: Records
) -> None:
    """The stale count looks up only records the upsert skipped: a first load's, none at all.

    Counted before the upsert, it probed ``rutter.orders`` once per staged record through whichever
    index the planner picked for a table it took for empty; during a parallel merge that was the
    (connection_id, customer_id) index, scanning every row the other chunk was inserting.
    """
    from rutter_pipeline.warehouse.merge_sql import statements
    from rutter_pipeline.warehouse.stage import stage

    loader.land(ORDERS, "c1", D1, D1, [[records.order(D1) for _ in range(20)]], "run-1")
    st = statements(ORDERS)
    params = {"entity": "orders", "connection_id": "c1", "run_id": "run-1", "start": D1, "end": D1}
    with psycopg.connect(warehouse) as conn:
        stage(conn, st, st.fill_from_landing, params)
        conn.execute(st.upsert, params)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + st.count_stale, params))
        conn.rollback()
    (lookup,) = [line for line in plan.splitlines() if " on orders t" in line]
    assert "never executed" in lookup, plan
