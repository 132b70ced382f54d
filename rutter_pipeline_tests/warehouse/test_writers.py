"""The landing and upsert writers commit only on ``finish``: the caller's verdict decides, no callback.

``ingest.land_scope`` and ``incremental.sync_entity`` write each validated chunk as it comes and
give the verdict after the last one; a landing or an upsert left without it loads nothing.
"""

from __future__ import annotations

from datetime import date

import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline_tests.warehouse.conftest import snapshot
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

D1 = date(2024, 3, 4)


def test_a_landing_left_without_a_verdict_keeps_the_previous_one(
    warehouse: str, loader: Loader, records: Records
) -> None:
    kept = [records.order(D1) for _ in range(3)]
    loader.land(ORDERS, "c1", D1, D1, [kept], "run-1")
    before = snapshot(warehouse, "landing")
    with pytest.raises(RuntimeError, match="fetch failed"), loader.landing(ORDERS, "c1", D1, D1, "run-2") as writer:
        writer.write([records.order(D1)])
        raise RuntimeError("fetch failed")
    with loader.landing(ORDERS, "c1", D1, D1, "run-3") as writer:
        writer.write([records.order(D1)])  # and no finish: rolled back too
    assert snapshot(warehouse, "landing") == before
    assert loader.merge(ORDERS, "c1", D1, D1, "run-1").inserted == 3


def test_a_landing_counts_each_day_as_it_writes(loader: Loader, records: Records) -> None:
    with loader.landing(ORDERS, "c1", D1, D1, "run-1") as writer:
        writer.write([records.order(D1) for _ in range(2)])
        writer.write([records.order(D1)])
        assert writer.counts == {D1: 3}
        stats = writer.finish(passed=True, held=[D1])
    assert (stats.passed, stats.held, stats.per_date) == (True, frozenset({D1}), {D1: 3})


def test_an_upsert_that_failed_validation_loads_nothing(warehouse: str, loader: Loader, records: Records) -> None:
    with loader.upserting(ORDERS, "c1", "sync-1") as writer:
        assert writer.write([records.order(D1) for _ in range(3)]) == []
        assert writer.finish(passed=False) is None
    assert list(read_records(warehouse, ORDERS, "c1")) == []
    with loader.upserting(ORDERS, "c1", "sync-2") as writer:
        writer.write([records.order(D1)])
        stats = writer.finish(passed=True)
    assert stats is not None and (stats.received, stats.inserted) == (1, 1)
    assert len(list(read_records(warehouse, ORDERS, "c1"))) == 1
