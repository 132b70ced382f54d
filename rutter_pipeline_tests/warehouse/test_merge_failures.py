"""A failed merge leaves ``rutter.*`` exactly as before, and re-running it completes it (docs/architecture.md §5.3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline_tests.fixtures.merge_kill import line_items_locked
from rutter_pipeline_tests.warehouse.conftest import snapshot
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

DAY = date(2024, 3, 5)
REPO = Path(__file__).resolve().parents[2]


def _before_and_after(loader: Loader, records: Records) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A merged first version of the day, and a second landing that updates, adds and drops orders."""
    first = [records.order(DAY) for _ in range(30)]
    loader.land(ORDERS, "c1", DAY, DAY, [first], "run-1")
    loader.merge(ORDERS, "c1", DAY, DAY, "run-1")
    second = [dict(o, status="archived", updated_at="2024-03-07T00:00:00.000Z") for o in first[:10]]
    second += first[10:20] + [records.order(DAY) for _ in range(5)]  # first[20:] dropped
    return first, second


def test_a_record_that_cannot_be_cast_rolls_the_whole_merge_back(
    warehouse: str, loader: Loader, records: Records
) -> None:
    _, second = _before_and_after(loader, records)
    before = snapshot(warehouse)
    # the parents cast fine; a line item's quantity does not, so the failure comes mid-merge
    broken = [dict(o) for o in second]
    broken[-1] = dict(broken[-1], line_items=[dict(broken[-1]["line_items"][0], quantity="three")])
    loader.land(ORDERS, "c1", DAY, DAY, [broken], "run-2")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        loader.merge(ORDERS, "c1", DAY, DAY, "run-2")
    assert snapshot(warehouse) == before

    loader.land(ORDERS, "c1", DAY, DAY, [second], "run-3")
    stats = loader.merge(ORDERS, "c1", DAY, DAY, "run-3")
    assert (stats.inserted, stats.updated, stats.unchanged, stats.deleted) == (5, 10, 10, 10)
    assert sorted(read_records(warehouse, ORDERS, "c1"), key=lambda r: r["id"]) == sorted(second, key=lambda r: r["id"])


MERGE_SCRIPT = """
import sys
from datetime import date
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.loader import Loader
Loader(sys.argv[1]).merge(ORDERS, "c1", date(2024, 3, 5), date(2024, 3, 5), "run-killed")
print("merge committed")
"""


def test_a_merge_killed_mid_transaction_leaves_the_tables_as_before(
    warehouse: str, loader: Loader, records: Records
) -> None:
    _, second = _before_and_after(loader, records)
    loader.land(ORDERS, "c1", DAY, DAY, [second], "run-2")
    before = snapshot(warehouse)
    with line_items_locked(warehouse) as kill_mid_merge:
        proc = subprocess.Popen(
            [sys.executable, "-c", MERGE_SCRIPT, warehouse],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:

            def kill() -> None:
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=10) == -signal.SIGKILL

            kill_mid_merge(kill)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert b"merge committed" not in proc.stdout.read()  # type: ignore[union-attr]
    assert snapshot(warehouse) == before

    stats = loader.merge(ORDERS, "c1", DAY, DAY, "run-3")  # the re-run completes the merge
    assert (stats.inserted, stats.updated, stats.deleted) == (5, 10, 10)
    assert sorted(read_records(warehouse, ORDERS, "c1"), key=lambda r: r["id"]) == sorted(second, key=lambda r: r["id"])
