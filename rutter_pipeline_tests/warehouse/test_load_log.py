"""The coverage table rutter.load_log: every day of a load logged, newest wins, cheap grouped reads."""

from __future__ import annotations

import time
from collections import Counter
from datetime import date, timedelta

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.ingest import Scope, land_scope
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import load_log
from rutter_pipeline.warehouse.load_log import DayLoad, day_loads
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres

D1 = date(2024, 1, 30)


def d(n: int) -> date:
    """The n-th day after D1 (D1 itself for 0)."""
    return D1 + timedelta(days=n)


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT connection_id, entity, day, status, records, landed, rejected, run_id, error "
            "FROM rutter.load_log ORDER BY 1, 2, 3"
        ).fetchall()


def loaded(connection_id: str, start: date, end: date, landed: int = 2, rejected: int = 0, entity: str = "orders"):
    """Every day of [start, end] loaded with ``landed`` and ``rejected`` records each."""
    days = range((end - start).days + 1)
    return day_loads(
        connection_id,
        entity,
        start,
        end,
        status="loaded",
        landed_by_day={start + timedelta(n): landed for n in days},
        rejected_by_day={start + timedelta(n): rejected for n in days},
    )


def test_day_loads_covers_every_day_including_empty_ones() -> None:
    loads = day_loads(
        "c1",
        "orders",
        d(0),
        d(4),
        status="loaded",
        landed_by_day=Counter({d(1): 5, d(3): 2, d(9): 7}),  # d(9) is outside the scope
        rejected_by_day=Counter({d(1): 1, d(4): 3, None: 4}),  # type: ignore[dict-item]  # no day: nowhere
    )
    assert loads == [
        DayLoad("c1", "orders", d(0), "loaded", 0, 0, 0),
        DayLoad("c1", "orders", d(1), "loaded", 6, 5, 1),
        DayLoad("c1", "orders", d(2), "loaded", 0, 0, 0),
        DayLoad("c1", "orders", d(3), "loaded", 2, 2, 0),
        DayLoad("c1", "orders", d(4), "loaded", 3, 0, 3),
    ]
    held = day_loads("c1", "orders", d(0), d(0), status="held", landed_by_day={}, rejected_by_day={}, error="gate")
    assert held == [DayLoad("c1", "orders", d(0), "held", error="gate")]
    with pytest.raises(ValueError, match="status"):
        day_loads("c1", "orders", d(0), d(0), status="done", landed_by_day={}, rejected_by_day={})
    with pytest.raises(ValueError, match="empty day range"):
        day_loads("c1", "orders", d(1), d(0), status="loaded", landed_by_day={}, rejected_by_day={})


def test_record_is_idempotent_and_the_newest_write_wins(warehouse: str) -> None:
    first = loaded("c1", d(0), d(2), landed=4, rejected=1)
    assert load_log.record(warehouse, first, "run-1") == 3
    after_first = rows(warehouse)
    assert after_first == [("c1", "orders", d(n), "loaded", 5, 4, 1, "run-1", None) for n in range(3)]
    assert load_log.record(warehouse, first, "run-1") == 3
    assert rows(warehouse) == after_first

    # a later load of d(1) is held back: it replaces what the log said about that day only
    held = DayLoad("c1", "orders", d(1), "held", 9, 7, 2, error="x" * 2000)
    assert load_log.record(warehouse, [held], "run-2") == 1
    assert rows(warehouse)[1] == ("c1", "orders", d(1), "held", 9, 7, 2, "run-2", "x" * 500)
    assert rows(warehouse)[0] == after_first[0] and rows(warehouse)[2] == after_first[2]

    # a day given twice in one call: the later one wins, and it is one row
    twice = [DayLoad("c1", "orders", d(1), "failed", error="boom"), DayLoad("c1", "orders", d(1), "loaded", 3, 3)]
    assert load_log.record(warehouse, twice, "run-3") == 1
    assert rows(warehouse)[1] == ("c1", "orders", d(1), "loaded", 3, 3, 0, "run-3", None)
    assert load_log.record(warehouse, [], "run-4") == 0
    with pytest.raises(ValueError, match="status"):
        load_log.record(warehouse, [DayLoad("c1", "orders", d(1), "done")], "run-5")


def test_record_writes_in_the_callers_transaction(warehouse: str) -> None:
    with psycopg.connect(warehouse) as conn:
        assert load_log.record(conn, loaded("c1", d(0), d(1)), "run-1") == 2
        assert conn.execute("SELECT count(*) FROM rutter.load_log").fetchone() == (2,)
        assert rows(warehouse) == []  # not committed: another session sees nothing yet
        conn.rollback()
    assert rows(warehouse) == []
    with psycopg.connect(warehouse) as conn:
        load_log.record(conn, loaded("c1", d(0), d(1)), "run-2")
    assert [r[2] for r in rows(warehouse)] == [d(0), d(1)]


def test_mark_failed_keeps_the_previous_counts(warehouse: str) -> None:
    load_log.record(warehouse, loaded("c1", d(0), d(2), landed=4, rejected=1), "run-1")
    assert load_log.mark_failed(warehouse, "c1", "orders", d(1), d(3), "run-2", "HTTP 500 " + "y" * 600) == 3
    error = ("HTTP 500 " + "y" * 600)[:500]
    assert rows(warehouse) == [
        ("c1", "orders", d(0), "loaded", 5, 4, 1, "run-1", None),
        ("c1", "orders", d(1), "failed", 5, 4, 1, "run-2", error),
        ("c1", "orders", d(2), "failed", 5, 4, 1, "run-2", error),
        ("c1", "orders", d(3), "failed", 0, 0, 0, "run-2", error),
    ]
    # a later successful load of the day clears the error
    load_log.record(warehouse, loaded("c1", d(2), d(2), landed=6), "run-3")
    assert rows(warehouse)[2] == ("c1", "orders", d(2), "loaded", 6, 6, 0, "run-3", None)


def test_last_loaded_day_ignores_held_and_failed_days(warehouse: str) -> None:
    assert load_log.last_loaded_day(warehouse, "c1") is None
    load_log.record(warehouse, loaded("c1", d(0), d(4)), "run-1")
    load_log.record(warehouse, [DayLoad("c1", "orders", d(5), "held", error="gate")], "run-2")
    load_log.mark_failed(warehouse, "c1", "orders", d(6), d(7), "run-3", "timeout")
    load_log.record(warehouse, loaded("c1", d(0), d(9), entity="products"), "run-4")
    load_log.record(warehouse, loaded("c2", d(0), d(20)), "run-5")
    assert load_log.last_loaded_day(warehouse, "c1") == d(4)
    assert load_log.last_loaded_day(warehouse, "c1", "products") == d(9)
    assert load_log.last_loaded_day(warehouse, "c1", "customers") is None
    load_log.mark_failed(warehouse, "c1", "orders", d(4), d(4), "run-6", "timeout")
    assert load_log.last_loaded_day(warehouse, "c1") == d(3)


def test_coverage_of_three_connections_in_one_call(warehouse: str) -> None:
    load_log.record(warehouse, loaded("a", d(0), d(9), landed=3, rejected=1), "r")  # 10 days, 40 records
    load_log.record(warehouse, loaded("a", d(0), d(1), landed=5, entity="products"), "r")
    load_log.record(warehouse, [DayLoad("a", "orders", d(10), "held", 8, 2, 6, "gate")], "r")
    load_log.record(warehouse, loaded("b", d(5), d(6), landed=7), "r")
    load_log.mark_failed(warehouse, "b", "orders", d(6), d(8), "r", "boom")
    load_log.mark_failed(warehouse, "c", "orders", d(0), d(0), "r", "boom")
    load_log.record(warehouse, loaded("z", d(0), d(0)), "r")  # not asked for

    cov = load_log.coverage(warehouse, ["a", "b", "c"])
    assert [(c["connection_id"], c["entity"]) for c in cov] == [
        ("a", "orders"),
        ("a", "products"),
        ("b", "orders"),
        ("c", "orders"),
    ]
    summary = [
        (c["first_day"], c["last_day"], c["days_loaded"], c["days_held"], c["days_failed"], c["records"], c["rejected"])
        for c in cov
    ]
    assert summary == [
        (d(0), d(10), 10, 1, 0, 40, 10),
        (d(0), d(1), 2, 0, 0, 10, 0),
        (d(5), d(8), 1, 0, 3, 7, 0),
        (d(0), d(0), 0, 0, 1, 0, 0),
    ]
    assert cov[0]["last_loaded_at"] is not None and cov[3]["last_loaded_at"] is None

    orders = load_log.coverage(warehouse, ["a", "b", "c"], entity="orders")
    assert [c["connection_id"] for c in orders] == ["a", "b", "c"]
    assert {c["connection_id"] for c in load_log.coverage(warehouse)} == {"a", "b", "c", "z"}
    assert load_log.coverage(warehouse, []) == []


def test_month_summary_and_the_days_not_loaded(warehouse: str) -> None:
    # D1 is January 30th: d(0)..d(1) in January, d(2).. in February
    load_log.record(warehouse, loaded("a", d(0), d(4), landed=2), "r")
    load_log.record(warehouse, [DayLoad("a", "products", d(3), "held", error="gate")], "r")
    load_log.mark_failed(warehouse, "a", "orders", d(1), d(2), "r", "boom")
    load_log.record(warehouse, loaded("b", d(0), d(4)), "r")

    months = [
        (m["entity"], m["month"], m["days_loaded"], m["days_held"], m["days_failed"], m["records"])
        for m in load_log.month_summary(warehouse, "a")
    ]
    assert months == [
        ("orders", date(2024, 1, 1), 1, 0, 1, 2),
        ("orders", date(2024, 2, 1), 2, 0, 1, 4),
        ("products", date(2024, 2, 1), 0, 1, 0, 0),
    ]
    assert load_log.failed_days(warehouse, "a") == [
        ("orders", d(1), "failed"),
        ("orders", d(2), "failed"),
        ("products", d(3), "held"),
    ]
    assert load_log.failed_days(warehouse, "a", "products") == [("products", d(3), "held")]
    assert load_log.failed_days(warehouse, "b") == []


def test_ten_thousand_rows_are_one_quick_statement(warehouse: str) -> None:
    loads = [l for n in range(10) for l in loaded(f"conn-{n}", d(0), d(999), landed=n)]  # noqa: E741
    assert len(loads) == 10_000
    started = time.monotonic()
    assert load_log.record(warehouse, loads, "big") == 10_000
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"record() of 10,000 rows took {elapsed:.2f} s"
    with psycopg.connect(warehouse) as conn:
        assert conn.execute("SELECT count(*), sum(landed) FROM rutter.load_log").fetchone() == (10_000, 45_000)


def test_land_scope_counts_the_rejects_of_each_day(pipeline: Pipeline) -> None:
    day = pipeline.today - timedelta(days=5)
    pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=day, kind="corrupt_records", count=2
    )
    start, end = day - timedelta(days=2), day + timedelta(days=1)
    outcome = land_scope(
        RutterClient.from_settings(Settings.from_env()),
        Loader(pipeline.warehouse_url),
        ORDERS,
        Scope(pipeline.connection_id, start, end),
        pipeline.access_token,
        "reject-run",
    )
    assert outcome.rejected == 2
    assert outcome.rejected_by_day == Counter({day: 2})

    # what the loads of those days would log: every day, each with all its records
    loads = day_loads(
        pipeline.connection_id,
        "orders",
        start,
        end,
        status="held",
        landed_by_day={date.fromisoformat(k): n for k, n in outcome.records_by_day.items()},
        rejected_by_day=outcome.rejected_by_day,
    )
    assert [(x.day, x.records) for x in loads] == [
        (start + timedelta(n), len(pipeline.truth(ORDERS, start + timedelta(n)))) for n in range(4)
    ]
    assert next(x for x in loads if x.day == day).rejected == 2
