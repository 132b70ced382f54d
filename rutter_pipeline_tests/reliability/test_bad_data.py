"""Bad data from Rutter, through the real pipeline: every odd record goes where the design says
(docs/architecture.md §5.2) - a typed column, ``extra``, or ``rutter.rejects`` with a reason naming the field and
the check - the check result says so, and the rest of the day equals the ground truth.

The sandbox serves the day's records changed (``set_field`` mutations), so its ground truth is
what the API returned, odd values included. Where the issue-19 bad-data cases live:

- every typed field (orders and their line items) with a value of the wrong JSON type, nulls where
  Rutter forbids them, unknown values of fixed enums, impossible timestamps: one record each,
  all in one day, ``test_every_bad_value_is_a_reject_naming_its_field_and_the_rest_of_the_day_loads``
  (the same corruptions one at a time against the validator alone: ``validation/test_models.py``);
- new unknown fields (``extra``, reported as drift), unicode and control characters (typed, exact),
  ids that look like SQL injection, an order with 5,000 line items:
  ``test_odd_but_valid_records_are_stored_exactly``;
- a NUL character: the "rangeruns" work (``nul_text`` mutation) in the ingest tests; a schema
  change across a whole batch: ``defs/test_schema_gate.py``.
"""

from __future__ import annotations

import copy
from datetime import timedelta

import orjson
import psycopg
import pytest

from rutter_pipeline.defs.ingest import schema_check_name
from rutter_pipeline.entities import ORDER_LINE_ITEMS, ORDERS, Column
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.conftest import Tally, other_connection, run_assets
from rutter_pipeline_tests.validation.test_models import WRONG_JSON

pytestmark = pytest.mark.postgres


def corruptions(column: Column) -> list[tuple[object, str]]:
    """(bad value, the check that must name it) for one typed column, from the entity table."""
    bad: list[tuple[object, str]] = [(WRONG_JSON[column.pg_type], "json_type")]
    if not column.nullable:
        bad.append((None, "not_nullable"))
    if column.enum is not None:
        bad.append(("on_hold_by_platform", "isin"))
    if column.pg_type == "timestamptz":
        bad.append(("2024-02-30T10:00:00Z", "timestamp"))
    return bad


def bad_values() -> list[tuple[str, str, object, str]]:
    """(mutation path, reported field, value, check) for every typed column of orders and line items."""
    cases = []
    for column in ORDERS.columns:
        path = ".".join(column.path)
        cases += [(path, path, value, check) for value, check in corruptions(column)]
    for column in ORDER_LINE_ITEMS.columns:
        path = ".".join(column.path)
        cases += [(f"line_items.0.{path}", f"line_items[0].{path}", v, c) for v, c in corruptions(column)]
    return cases


def rejects(url: str, connection_id: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT record, errors, partition_date FROM rutter.rejects WHERE connection_id = %s", (connection_id,)
        ).fetchall()
    return [{"record": r, "errors": e, "day": d} for r, e, d in rows]


def served(merchant: Pipeline, day) -> list[dict]:
    """The day's orders in the order the sandbox serves them (created_at, key): what ``index`` counts."""
    lo, hi = day_window_ms(day)
    return merchant.sandbox.control.ground_truth("orders", merchant.connection_id, created_at_min=lo, created_at_max=hi)


def schema_check(result):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == schema_check_name(ORDERS)]
    return evaluation


def test_every_bad_value_is_a_reject_naming_its_field_and_the_rest_of_the_day_loads(
    pipeline: Pipeline, instance_factory, tally: Tally
) -> None:
    cases = bad_values()
    merchant = other_connection(pipeline, orders_per_day=len(cases) * 2, history_days=10)
    instance = instance_factory([merchant.connection_id])
    day = merchant.today - timedelta(days=3)
    clean = served(merchant, day)
    # one record per bad value, each with a customer and a line item, so every path exists
    targets = [i for i, r in enumerate(clean) if r.get("customer") and r["line_items"]][: len(cases)]
    assert len(targets) == len(cases), f"{len(targets)} orders with a customer and line items for {len(cases)} cases"
    for index, (path, _field, value, _check) in zip(targets, cases, strict=True):
        merchant.sandbox.control.mutate(
            connection_id=merchant.connection_id, entity="orders", day=day, kind="set_field", field=path, value=value,
            index=index,
        )  # fmt: skip
    tally.faults(len(cases))
    truth = served(merchant, day)
    bad = {clean[i]["id"]: (truth[i], case) for i, case in zip(targets, cases, strict=True)}

    strict = run_assets(merchant, instance, [ORDERS], day)
    assert not strict.success and not schema_check(strict).passed, "a strict gate passed a day of bad records"
    assert merchant.stored(ORDERS, day) == []

    merchant.configure(reject_tolerance=0.9)
    tolerant = run_assets(merchant, instance, [ORDERS], day)
    assert tolerant.success, [e.message for e in tolerant.all_events if e.is_failure]

    # every bad record is in rutter.rejects once, as served, with the field and the check that failed
    stored_rejects = rejects(merchant.warehouse_url, merchant.connection_id)
    by_record = {orjson.dumps(r["record"], option=orjson.OPT_SORT_KEYS): r for r in stored_rejects}
    assert len(by_record) == len(stored_rejects) == len(bad)
    for record, (path_field, field, value, check) in ((rec, case) for rec, case in bad.values()):
        reject = by_record.get(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
        assert reject is not None, f"{path_field}={value!r}: no reject"
        assert (field, check) in {(e["field"], e["check"]) for e in reject["errors"]}, (field, check, reject["errors"])
        assert all(e["message"] and field in e["message"] for e in reject["errors"] if e["field"] == field)
    # A record whose created_at is broken belongs to no day: rutter.rejects keeps it without one, and
    # the gate weighs it over the whole scope; the partition's own count holds the dated ones.
    undated = [rec for rec, (path, *_) in bad.values() if path == "created_at"]
    assert len(undated) == len(corruptions(next(c for c in ORDERS.columns if c.name == "created_at")))
    assert sorted(str(r["record"]["id"]) for r in stored_rejects if r["day"] is None) == sorted(
        str(r["id"]) for r in undated
    )
    assert {r["day"] for r in stored_rejects if r["day"] is not None} == {day}
    evaluation = schema_check(tolerant)
    assert evaluation.passed and evaluation.metadata["rejected"].value == len(bad) - len(undated)
    assert evaluation.metadata["undated_rejects"].value == len(undated)
    cases = evaluation.metadata["failure_cases"].value
    assert {c["field"] for c in cases} <= {f for _, (_, f, _, _) in bad.values()} and "created_at" in {
        c["field"] for c in cases
    }

    # and the rest of the day is exactly what Rutter served
    tally.compare(f"orders {day} without the rejects", merchant.stored(ORDERS, day), [r for r in truth if r not in
                  [rec for rec, _ in bad.values()]])  # fmt: skip


SQL_IDS = ["1'; DROP TABLE rutter.orders; --", 'x" OR "1"="1', "li'); DELETE FROM rutter.order_line_items; --"]
ODD_TEXT = "Zoë's Ünïcødé café ✓ 日本語 \U0001d11e \u202eevil\u202c tab\there\nline\r\u0007\u001b[31m\u007f"


def test_odd_but_valid_records_are_stored_exactly(pipeline: Pipeline, instance_factory, tally: Tally) -> None:
    merchant = other_connection(pipeline, orders_per_day=12, history_days=10)
    instance = instance_factory([merchant.connection_id])
    day = merchant.today - timedelta(days=2)
    clean = served(merchant, day)
    assert len(clean) >= 6
    item = copy.deepcopy(clean[0]["line_items"][0])
    huge = [dict(item, id=f"{item['id']}-{n}", quantity=n % 7 + 1, price=round(n * 0.37, 2)) for n in range(5000)]
    mutations = [
        (0, "line_items", huge),  # an order with 5,000 line items
        (1, "id", SQL_IDS[0]),
        (2, "id", SQL_IDS[1]),
        (2, "line_items.0.id", SQL_IDS[2]),
        (3, "line_items.0.title", ODD_TEXT),  # unicode, bidi and control characters (not NUL)
        (3, "order_number", "\u2116 42 \u2010 \U0001f9fe"),
        (4, "loyalty_tier", {"name": ODD_TEXT, "points": 12}),  # a field Rutter added since
        (5, "status", "archived"),  # a fixed enum's known value stays typed
    ]
    for index, path, value in mutations:
        merchant.sandbox.control.mutate(
            connection_id=merchant.connection_id, entity="orders", day=day, kind="set_field", field=path, value=value,
            index=index,
        )  # fmt: skip
    tally.faults(len(mutations))

    result = run_assets(merchant, instance, [ORDERS], day)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    evaluation = schema_check(result)
    assert evaluation.passed and evaluation.metadata["rejected"].value == 0
    assert [d["path"] for d in evaluation.metadata["drift"].value] == ["orders.loyalty_tier"]
    tally.converged(merchant, [ORDERS], day)

    with psycopg.connect(merchant.warehouse_url) as conn:
        typed = dict(conn.execute("SELECT id, order_number FROM rutter.orders WHERE connection_id = %s",
                                  (merchant.connection_id,)).fetchall())  # fmt: skip
        assert {SQL_IDS[0], SQL_IDS[1]} <= typed.keys()
        (items,) = conn.execute(
            "SELECT count(*) FROM rutter.order_line_items WHERE connection_id = %s AND order_id = %s",
            (merchant.connection_id, clean[0]["id"]),
        ).fetchone()
        assert items == 5000
        (title,) = conn.execute(
            "SELECT title FROM rutter.order_line_items WHERE connection_id = %s AND order_id = %s",
            (merchant.connection_id, clean[3]["id"]),
        ).fetchone()
        assert title == ODD_TEXT
        (extra,) = conn.execute(
            "SELECT extra FROM rutter.orders WHERE connection_id = %s AND id = %s",
            (merchant.connection_id, clean[4]["id"]),
        ).fetchone()
        assert extra["loyalty_tier"] == {"name": ODD_TEXT, "points": 12}
        assert conn.execute("SELECT count(*) FROM rutter.rejects").fetchone() == (0,)
