"""A first load is written straight from the landing (``merge_chunk.insert_landed``), and falls back to
the staged merge whenever a key is landed twice or already stored: same rows either way."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from rutter_pipeline.entities import CUSTOMERS, ORDERS, PRODUCTS
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.partitioning import parse_timestamp
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline.warehouse.sync_state import get_watermark
from rutter_pipeline_tests.warehouse.factories import Records, iso

pytestmark = pytest.mark.postgres

D1, D2 = date(2024, 3, 4), date(2024, 3, 5)
# Columns that differ between two loads of the same records by design.
BOOKKEEPING = ("connection_id", "_loaded_at", "_run_id")


def _rows(url: str, table: str, connection_id: str) -> list[str]:
    """The connection's rows of ``rutter.<table>`` as JSON text, without the bookkeeping columns."""
    drop = " - ".join(f"'{c}'" for c in BOOKKEEPING)
    with psycopg.connect(url) as conn:
        return [
            text
            for (text,) in conn.execute(
                f"SELECT (to_jsonb(x) - {drop})::text FROM rutter.{table} x WHERE connection_id = %s ORDER BY 1",
                (connection_id,),
            )
        ]


@pytest.mark.parametrize("spec", [ORDERS, PRODUCTS], ids=lambda s: s.name)
def test_a_first_load_writes_the_rows_the_staged_merge_writes(
    spec: Any, warehouse: str, loader: Loader, records: Records
) -> None:
    make = records.order if spec is ORDERS else records.product
    batch = [make(D1) for _ in range(6)] + [make(D2) for _ in range(4)]
    loader.land(spec, "direct", D1, D2, [batch], "run-1")
    direct = loader.merge(spec, "direct", D1, D2, "run-1")
    # The same records with one landed twice: the straight INSERT meets the primary key, and the
    # chunk is merged through the stage instead, which keeps one of each.
    loader.land(spec, "staged", D1, D2, [[*batch, batch[3]]], "run-1")
    staged = loader.merge(spec, "staged", D1, D2, "run-1")

    assert (direct.direct_chunks, staged.direct_chunks) == (1, 0)
    child = spec.children[0]
    kids = sum(len(r[child.field]) for r in batch)
    for stats in (direct, staged):
        assert (stats.inserted, stats.updated, stats.unchanged, stats.stale, stats.deleted) == (10, 0, 0, 0, 0)
        assert (stats.children[child.table].inserted, stats.children[child.table].deleted) == (kids, 0)
    for table in (spec.table, child.table):
        assert _rows(warehouse, table, "direct") == _rows(warehouse, table, "staged")
    assert len(_rows(warehouse, child.table, "direct")) == kids
    by_id = sorted(batch, key=lambda r: r["id"])
    assert sorted(read_records(warehouse, spec, "direct"), key=lambda r: r["id"]) == by_id
    newest = max(parse_timestamp(r["updated_at"]) for r in batch)
    assert get_watermark(warehouse, "direct", spec.name) == get_watermark(warehouse, "staged", spec.name) == newest

    # Merged again, the range holds rows: the stage compares content hashes, which the first load
    # computed the same way, so nothing is rewritten.
    again = loader.merge(spec, "direct", D1, D2, "run-2")
    assert (again.direct_chunks, again.inserted, again.updated, again.unchanged) == (0, 0, 0, 10)


def test_a_record_stored_on_another_day_is_moved_by_the_staged_merge(
    warehouse: str, loader: Loader, records: Records
) -> None:
    """A customer without created_at is dated by updated_at, so an update moves it to another day.

    The day it moves to held no rows, which makes its merge a first load; the straight INSERT then
    meets the row stored on the old day, and the staged merge updates it in place.
    """
    customer = records.customer(D1) | {"created_at": None}
    loader.land(CUSTOMERS, "c1", D1, D1, [[customer]], "run-1")
    assert loader.merge(CUSTOMERS, "c1", D1, D1, "run-1").direct_chunks == 1
    moved = customer | {"updated_at": iso(records.moment(D2)), "first_name": "Moved"}
    loader.land(CUSTOMERS, "c1", D2, D2, [[moved]], "run-2")
    stats = loader.merge(CUSTOMERS, "c1", D2, D2, "run-2")
    assert (stats.direct_chunks, stats.inserted, stats.updated) == (0, 0, 1)
    assert list(read_records(warehouse, CUSTOMERS, "c1", D2, D2)) == [moved]
    assert list(read_records(warehouse, CUSTOMERS, "c1", D1, D1)) == []


def test_a_failed_first_load_leaves_no_rows(warehouse: str, loader: Loader, records: Records) -> None:
    """A child row that cannot be typed fails the whole chunk: its parents are not left behind."""
    orders = [records.order(D1) for _ in range(3)]
    orders[2]["line_items"][0]["quantity"] = "three"
    loader.land(ORDERS, "c1", D1, D1, [orders], "run-1")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        loader.merge(ORDERS, "c1", D1, D1, "run-1")
    assert _rows(warehouse, ORDERS.table, "c1") == [] == _rows(warehouse, "order_line_items", "c1")
