"""ValidationReport: merging per-page reports, check metadata and failure cases."""

from __future__ import annotations

import json

import pytest

from rutter_pipeline.entities import ORDERS, PRODUCTS
from rutter_pipeline.validation import DriftField, Reject, ValidationReport, validate_records
from rutter_pipeline_tests.validation.records import RecordFactory


@pytest.fixture
def factory() -> RecordFactory:
    return RecordFactory(seed=5)


def _pages(records: list[dict], size: int, tolerance: float = 0.0) -> ValidationReport:
    pages = [records[i : i + size] for i in range(0, len(records), size)]
    reports = [validate_records(ORDERS, page, tolerance=tolerance) for page in pages]
    merged = reports[0]
    for report in reports[1:]:
        merged = merged.merge(report)
    return merged


def test_merged_page_reports_equal_one_report_of_the_whole_batch(factory):
    records = factory.batch("orders", 90)
    records[3]["status"] = "lost"
    records[47]["line_items"][0]["price"] = "1"
    records[88]["total_tax"] = "x"
    for record in records[40:50]:
        record["loyalty_points"] = 3
    whole = validate_records(ORDERS, records, tolerance=0.05)
    merged = _pages(records, 30, tolerance=0.05)
    assert merged.total == whole.total == 90
    assert [id(r) for r in merged.valid] == [id(r) for r in whole.valid]
    assert [(id(r.record), r.errors) for r in merged.rejects] == [(id(r.record), r.errors) for r in whole.rejects]
    assert merged.drift == whole.drift == [DriftField("orders.loyalty_points", 10, "number")]
    assert merged.schema_failures == whole.schema_failures == []
    assert merged.passed and merged.reject_rate == pytest.approx(3 / 90)
    assert merged.metadata() == whole.metadata()


def test_a_field_missing_from_one_page_only_is_not_a_schema_change_once_merged(factory):
    records = factory.batch("orders", 20)
    for record in records[:10]:
        del record["total_price"]
    first = validate_records(ORDERS, records[:10])
    assert [f["kind"] for f in first.schema_failures] == ["missing"]
    merged = first.merge(validate_records(ORDERS, records[10:]))
    assert merged.schema_failures == []
    assert len(merged.rejects) == 10 and not merged.passed  # the records themselves are still rejects


def test_a_field_missing_or_retyped_on_every_page_stays_a_schema_failure(factory):
    records = factory.batch("orders", 20)
    for record in records:
        del record["updated_at"]
        record["total_price"] = str(record["total_price"])
    merged = _pages(records, 7, tolerance=1.0)
    assert [(f["field"], f["kind"], f["count"]) for f in merged.schema_failures] == [
        ("total_price", "retyped", 20),
        ("updated_at", "missing", 20),
    ]
    assert not merged.passed


def test_retyped_on_one_page_but_right_on_another_is_row_level_once_merged(factory):
    records = factory.batch("orders", 20)
    for record in records[:5]:
        record["total_discount"] = "0"
    merged = _pages(records, 5)
    assert merged.schema_failures == []
    assert len(merged.rejects) == 5


def test_merge_refuses_mismatched_reports(factory):
    orders = validate_records(ORDERS, factory.batch("orders", 2))
    with pytest.raises(ValueError, match="products"):
        orders.merge(validate_records(PRODUCTS, factory.batch("products", 2)))
    with pytest.raises(ValueError, match="tolerance"):
        orders.merge(validate_records(ORDERS, factory.batch("orders", 2), tolerance=0.1))


def test_merge_with_an_empty_page(factory):
    records = factory.batch("orders", 4)
    merged = validate_records(ORDERS, []).merge(validate_records(ORDERS, records)).merge(validate_records(ORDERS, []))
    assert merged.total == 4 and merged.valid == records and merged.passed


def test_merge_keeps_schema_failures_of_hand_built_reports():
    failure = {"field": "total_price", "kind": "missing", "detail": "gone", "count": 2}
    first = ValidationReport("orders", 2, [], [], [dict(failure)], [])
    second = ValidationReport("orders", 3, [], [], [dict(failure)], [DriftField("orders.x", 1, "string")])
    merged = first.merge(second)
    assert merged.schema_failures == [{**failure, "count": 4}]
    assert merged.drift == [DriftField("orders.x", 1, "string")]


def test_metadata_is_json_serialisable_and_summarises(factory):
    records = factory.batch("orders", 10)
    records[0]["total_price"] = float("nan")
    records[1]["total_price"] = {"amount": 10**40, "nested": [1, 2, {"deep": "x" * 1000}]}
    records[2]["line_items"][1]["quantity"] = "3"
    records[3]["status"] = "s" * 5000
    records[4]["new_field"] = {"a": 1}
    records[5] = "not a record"
    report = validate_records(ORDERS, records, tolerance=0.5)
    meta = report.metadata()
    text = json.dumps(meta, allow_nan=False)
    assert json.loads(text) == meta
    assert meta["total"] == 10 and meta["valid"] == 5 and meta["rejected"] == 5
    assert meta["reject_rate"] == 0.5 and meta["tolerance"] == 0.5 and meta["passed"] is True
    assert meta["error_counts"] == {"json_type": 2, "not_nullable": 1, "isin": 1, "record_type": 1}
    assert meta["error_fields"]["line_items[].quantity"] == 1
    assert meta["drift"] == [{"path": "orders.new_field", "count": 1, "example_type": "object"}]
    assert meta["schema_failures"] == []
    json.dumps(report.failure_cases(100), allow_nan=False)
    json.dumps([r.errors for r in report.rejects], allow_nan=False)


def test_failure_cases_lists_schema_failures_first_and_respects_the_limit(factory):
    records = factory.batch("orders", 30)
    for record in records:
        del record["created_at"]
        record["status"] = "bogus"
    report = validate_records(ORDERS, records)
    cases = report.failure_cases(limit=5)
    assert len(cases) == 5
    assert cases[0] == {
        "id": None,
        "field": "created_at",
        "check": "schema_missing",
        "failure_case": None,
        "message": "required field absent from all 30 objects that should carry it",
    }
    assert cases[1]["id"] == records[0]["id"] and cases[1]["field"] == "status" and cases[1]["check"] == "isin"
    assert len(report.failure_cases()) == 20


def test_reject_rate_and_passed():
    report = ValidationReport("orders", 4, [{}] * 3, [Reject({}, [])], [], [], tolerance=0.25)
    assert report.reject_rate == 0.25 and report.passed
    report.tolerance = 0.2
    assert not report.passed
