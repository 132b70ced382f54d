"""Data the warehouse cannot take as it is: duplicate child ids, NUL characters; and the ANALYZE
after a big merge that keeps the recovery re-run fast (issue 19)."""

from __future__ import annotations

import copy
import time
from datetime import date

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.ingest import nul_errors
from rutter_pipeline.warehouse.errors import UnstorableRecord
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.merge import ANALYZE_MIN_ROWS
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

D1, D2 = date(2024, 3, 4), date(2024, 3, 5)


def _line_items(url: str, connection_id: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT order_id, id, title, _position FROM rutter.order_line_items WHERE connection_id = %s ORDER BY 1, 2",
            (connection_id,),
        ).fetchall()


def _with_duplicate_line_item(records: Records, day: date) -> dict:
    order = records.order(day)
    while len(order["line_items"]) < 2:
        order = records.order(day)
    twin = copy.deepcopy(order["line_items"][0])
    twin["title"] = "the second line item of this id"
    order["line_items"].append(twin)
    return order


def test_duplicate_line_item_ids_keep_the_first_and_are_counted(
    warehouse: str, loader: Loader, records: Records
) -> None:
    batch = [records.order(D1) for _ in range(4)] + [_with_duplicate_line_item(records, D1)]
    loader.land(ORDERS, "c1", D1, D1, [batch], "run-1")
    first = loader.merge(ORDERS, "c1", D1, D1, "run-1")

    assert first.inserted == 5
    counts = first.children["order_line_items"]
    assert counts.duplicates == 1
    assert counts.inserted == sum(len(o["line_items"]) for o in batch) - 1
    dup = batch[-1]
    kept = [row for row in _line_items(warehouse, "c1") if row[0] == dup["id"] and row[1] == dup["line_items"][0]["id"]]
    # the first of the two (position 1) is kept, not the appended twin
    assert [(title, position) for _, _, title, position in kept] == [(dup["line_items"][0]["title"], 1)]
    assert first.by_month[D1.replace(day=1)].children["order_line_items"].duplicates == 1

    # deterministic: a re-run changes nothing, and an update of the order keeps the same one again
    before = _line_items(warehouse, "c1")
    again = loader.merge(ORDERS, "c1", D1, D1, "run-2")
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert _line_items(warehouse, "c1") == before
    dup["updated_at"] = dup["updated_at"].replace("Z", "").rsplit(".", 1)[0][:-2] + "59.999Z"
    dup["note"] = "changed"
    loader.land(ORDERS, "c1", D1, D1, [batch], "run-3")
    changed = loader.merge(ORDERS, "c1", D1, D1, "run-3")
    assert changed.updated == 1 and changed.children["order_line_items"].duplicates == 1
    assert _line_items(warehouse, "c1") == before


def test_duplicate_line_item_ids_in_an_incremental_upsert(warehouse: str, loader: Loader, records: Records) -> None:
    order = _with_duplicate_line_item(records, D1)
    stats = loader.upsert(ORDERS, "c1", [order], "sync-1")
    assert stats.inserted == 1
    assert stats.children["order_line_items"].duplicates == 1
    assert len(_line_items(warehouse, "c1")) == len(order["line_items"]) - 1


def test_a_record_with_a_nul_is_handed_back_and_its_reject_is_stored_escaped(
    warehouse: str, loader: Loader, records: Records
) -> None:
    batch = [records.order(D1) for _ in range(3)]
    odd = batch[1]
    odd["line_items"][0]["title"] = "Mug\x00 large"
    odd["note\x00"] = "a key with a NUL"

    with pytest.raises(UnstorableRecord, match=r"line_items\[0\]\.title"):
        loader.land(ORDERS, "c1", D1, D1, [batch], "run-0")

    handed: list[tuple[dict, list[str]]] = []
    stats = loader.land(ORDERS, "c1", D1, D1, [batch], "run-1", keep_unstorable=handed)
    assert stats.total == 2
    assert [(r["id"], sorted(p)) for r, p in handed] == [(odd["id"], ["line_items[0].title", "note\\u0000"])]
    loader.merge(ORDERS, "c1", D1, D1, "run-1")

    loader.write_rejects(ORDERS, "c1", [(D1, odd, nul_errors(handed[0][1]))], "run-1")
    with psycopg.connect(warehouse) as conn:
        (record, errors), *more = conn.execute(
            "SELECT record, errors FROM rutter.rejects WHERE entity = 'orders' AND connection_id = 'c1'"
        ).fetchall()
        stored = conn.execute("SELECT id FROM rutter.orders WHERE connection_id = 'c1' ORDER BY id").fetchall()
    assert more == []
    assert record["id"] == odd["id"]
    # every other character as received; each NUL as the six characters of its JSON escape
    assert record["line_items"][0]["title"] == "Mug\\u0000 large"
    assert record["note\\u0000"] == "a key with a NUL"
    assert {e["check"] for e in errors} == {"nul_character"}
    assert all("NUL character" in e["message"] for e in errors)
    assert stored == sorted((o["id"],) for o in batch if o is not odd)


def _analyzed(url: str, table: str) -> tuple[float, object]:
    """(reltuples, last manual ANALYZE) of ``table``; the statistics view is read fresh each time."""
    with psycopg.connect(url) as conn:
        reltuples = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()[0]
        conn.execute("SELECT pg_stat_clear_snapshot()")
        last = conn.execute(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,)
        ).fetchone()[0]
    return reltuples, last


def test_a_merge_that_changed_much_analyzes_its_tables_and_a_small_one_does_not(
    warehouse: str, loader: Loader, records: Records
) -> None:
    assert _analyzed(warehouse, "rutter.orders") == (-1, None)  # never analyzed
    n = ANALYZE_MIN_ROWS + 100
    loader.land(ORDERS, "c1", D1, D1, [[records.order(D1) for _ in range(n)]], "run-1")
    loader.merge(ORDERS, "c1", D1, D1, "run-1")
    # ANALYZE counted the rows in the same transaction as it ran: reltuples is exact at once
    for table in ("rutter.orders", "rutter.order_line_items"):
        assert _analyzed(warehouse, table)[0] > 0, table
    assert _analyzed(warehouse, "rutter.orders")[0] == n
    deadline = time.monotonic() + 10  # the statistics view may show the ANALYZE a moment later
    while (first := _analyzed(warehouse, "rutter.orders")[1]) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first is not None

    # a day of a few orders next to them: below the threshold, no ANALYZE
    loader.land(ORDERS, "c1", D2, D2, [[records.order(D2) for _ in range(5)]], "run-2")
    loader.merge(ORDERS, "c1", D2, D2, "run-2")
    time.sleep(1)
    assert _analyzed(warehouse, "rutter.orders") == (n, first)


def test_an_incremental_upsert_hands_back_a_record_with_a_nul(warehouse: str, loader: Loader, records: Records) -> None:
    batch = [records.order(D1) for _ in range(3)]
    batch[0]["order_number"] = "#1001\x00"
    with pytest.raises(UnstorableRecord, match="order_number"):
        loader.upsert(ORDERS, "c1", batch, "sync-0")
    handed: list[tuple[dict, list[str]]] = []
    stats = loader.upsert(ORDERS, "c1", batch, "sync-1", keep_unstorable=handed)
    assert [(r["id"], p) for r, p in handed] == [(batch[0]["id"], ["order_number"])]
    assert (stats.received, stats.inserted) == (2, 2)
