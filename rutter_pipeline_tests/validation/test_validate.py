"""validate_records: row-level rejects, schema-level failures, drift and tolerance (docs/architecture.md §5.2)."""

from __future__ import annotations

import pytest

from rutter_pipeline.entities import CUSTOMERS, ENTITIES, ORDERS, PRODUCTS, TRANSACTIONS
from rutter_pipeline.validation import DriftField, validate_records
from rutter_pipeline_tests.validation.records import RecordFactory


@pytest.fixture
def factory() -> RecordFactory:
    return RecordFactory(seed=21)


def _only_errors(report) -> list[list[dict]]:
    return [[(e["field"], e["check"]) for e in reject.errors] for reject in report.rejects]


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_a_clean_batch_passes_with_no_rejects_and_no_drift(factory, entity):
    records = factory.batch(entity, 200)
    report = validate_records(ENTITIES[entity], records)
    assert report.passed
    assert report.total == 200
    assert report.rejects == [] and report.schema_failures == [] and report.drift == []
    assert report.valid == records
    assert all(a is b for a, b in zip(report.valid, records, strict=True)), "valid must be the same objects"
    assert report.reject_rate == 0.0


def test_one_malformed_record_among_100_is_the_only_reject_with_a_precise_reason(factory):
    records = factory.batch("orders", 100)
    records[37]["total_price"] = "129.99"
    report = validate_records(ORDERS, records)
    assert len(report.rejects) == 1
    reject = report.rejects[0]
    assert reject.record is records[37]
    assert reject.errors == [
        {
            "field": "total_price",
            "check": "json_type",
            "failure_case": "129.99",
            "message": "total_price: should be a number, got string",
        }
    ]
    assert len(report.valid) == 99
    assert [id(r) for r in report.valid] == [id(r) for i, r in enumerate(records) if i != 37]
    assert report.schema_failures == []
    assert report.reject_rate == pytest.approx(0.01)
    assert not report.passed  # tolerance 0 is strict


def test_tolerance_zero_versus_five_percent(factory):
    records = factory.batch("orders", 100)
    records[3]["status"] = "shipped"
    assert not validate_records(ORDERS, records, tolerance=0.0).passed
    assert validate_records(ORDERS, records, tolerance=0.05).passed
    for i in range(10, 16):  # 7 of 100 rejected: above 5 %
        records[i]["payment_status"] = "chargeback"
    report = validate_records(ORDERS, records, tolerance=0.05)
    assert len(report.rejects) == 7 and not report.passed
    assert report.tolerance == 0.05
    with pytest.raises(ValueError, match="tolerance"):
        validate_records(ORDERS, records, tolerance=5)


def test_validation_is_lazy_every_problem_of_a_record_is_reported_in_column_order(factory):
    records = factory.batch("orders", 20)
    bad = records[5]
    bad["status"] = "shipped"
    bad["created_at"] = "yesterday"
    bad["total_discount"] = None
    del bad["payment_status"]
    bad["line_items"][2]["quantity"] = True
    records[9]["fulfillment_status"] = "lost"
    report = validate_records(ORDERS, records)
    assert _only_errors(report) == [
        [
            ("status", "isin"),
            ("payment_status", "required"),
            ("total_discount", "not_nullable"),
            ("created_at", "timestamp"),
            ("line_items[2].quantity", "json_type"),
        ],
        [("fulfillment_status", "isin")],
    ]


def test_a_required_field_missing_from_every_record_is_a_schema_failure(factory):
    records = factory.batch("orders", 50)
    for record in records:
        del record["total_price"]
    report = validate_records(ORDERS, records, tolerance=1.0)
    assert report.schema_failures == [
        {
            "field": "total_price",
            "kind": "missing",
            "detail": "required field absent from all 50 objects that should carry it",
            "count": 50,
        }
    ]
    assert not report.passed, "a schema failure fails whatever the tolerance"
    assert {e["check"] for r in report.rejects for e in r.errors} == {"required"}


def test_a_required_field_missing_from_some_records_is_row_level(factory):
    records = factory.batch("orders", 50)
    del records[0]["updated_at"]
    report = validate_records(ORDERS, records)
    assert report.schema_failures == []
    assert _only_errors(report) == [[("updated_at", "required")]]


def test_optional_fields_may_be_absent_everywhere(factory):
    records = factory.batch("orders", 30)
    for record in records:
        del record["platform_id"], record["order_number"]
        for item in record["line_items"]:
            del item["variant_id"]
    report = validate_records(ORDERS, records)
    assert report.passed and report.schema_failures == [] and report.rejects == []


def test_a_field_retyped_everywhere_is_a_schema_failure(factory):
    records = factory.batch("orders", 40)
    for record in records:
        record["total_price"] = str(record["total_price"])
        record["total_tax"] = None if record["total_tax"] < 5 else str(record["total_tax"])  # nulls stay fine
    report = validate_records(ORDERS, records, tolerance=1.0)
    non_null_tax = sum(r["total_tax"] is not None for r in records)
    assert report.schema_failures == [
        {
            "field": "total_price",
            "kind": "retyped",
            "detail": "expected number, got string in all 40 non-null values",
            "count": 40,
        },
        {
            "field": "total_tax",
            "kind": "retyped",
            "detail": f"expected number, got string in all {non_null_tax} non-null values",
            "count": non_null_tax,
        },
    ]
    assert not report.passed


def test_a_field_retyped_in_some_records_is_row_level(factory):
    records = factory.batch("transactions", 40)
    for record in records[:3]:
        record["amount"] = str(record["amount"])
    report = validate_records(TRANSACTIONS, records)
    assert report.schema_failures == []
    assert _only_errors(report) == [[("amount", "json_type")]] * 3


def test_new_fields_are_drift_only(factory):
    records = factory.batch("orders", 30)
    for record in records[:4]:
        record["loyalty_points"] = 120
        record["line_items"][0]["gift"] = True
    records[5]["line_items"][1]["gift"] = None
    report = validate_records(ORDERS, records)
    assert report.passed and report.rejects == [] and report.schema_failures == []
    assert report.drift == [
        DriftField("orders.loyalty_points", 4, "number"),
        DriftField("line_items[].gift", 5, "boolean"),
    ]


def test_known_but_untyped_fields_are_not_drift(factory):
    records = factory.batch("orders", 10)
    records[0]["tags"] = ["vip"]
    records[0]["cancelled_at"] = "2024-03-02T00:00:00Z"
    records[0]["line_items"][0]["platform_id"] = "77"
    assert validate_records(ORDERS, records).drift == []


def test_a_child_problem_rejects_the_whole_parent_with_an_indexed_path(factory):
    records = factory.batch("orders", 30)
    records[2]["line_items"][1]["price"] = None
    records[4]["line_items"][2]["price"] = "9.99"
    del records[6]["line_items"][0]["id"]
    records[8]["line_items"].append("not an object")
    records[10]["line_items"] = None
    records[12]["line_items"] = {"id": "li"}
    del records[14]["line_items"]
    report = validate_records(ORDERS, records)
    assert [r.record for r in report.rejects] == [records[i] for i in (2, 4, 6, 8, 10, 12, 14)]
    assert _only_errors(report) == [
        [("line_items[1].price", "not_nullable")],
        [("line_items[2].price", "json_type")],
        [("line_items[0].id", "required")],
        [("line_items[3]", "json_type")],
        [("line_items", "not_nullable")],
        [("line_items", "json_type")],
        [("line_items", "required")],
    ]
    assert report.schema_failures == []
    assert len(report.valid) == 23


def test_child_fields_missing_or_retyped_across_the_batch_are_schema_failures(factory):
    records = factory.batch("products", 10)
    for record in records:
        for variant in record["variants"]:
            del variant["price"]
            variant["requires_shipping"] = "yes"
    report = validate_records(PRODUCTS, records, tolerance=1.0)
    variants = sum(len(r["variants"]) for r in records)
    assert [(f["field"], f["kind"], f["count"]) for f in report.schema_failures] == [
        ("variants[].price", "missing", variants),
        ("variants[].requires_shipping", "retyped", variants),
    ]
    records = factory.batch("orders", 10)
    for record in records:
        del record["line_items"]
    report = validate_records(ORDERS, records, tolerance=1.0)
    assert [(f["field"], f["kind"]) for f in report.schema_failures] == [("line_items", "missing")]


def test_nested_sources_guest_orders_and_broken_customers(factory):
    records = [factory.order(guest=True) for _ in range(5)] + [factory.order() for _ in range(5)]
    assert records[0]["customer"] is None
    assert validate_records(ORDERS, records).passed
    records[6]["customer"] = "cus_123"
    del records[7]["customer"]["id"]
    records[8]["customer"]["id"] = 42
    report = validate_records(ORDERS, records)
    assert _only_errors(report) == [
        [("customer", "json_type")],
        [("customer.id", "required")],
        [("customer.id", "json_type")],
    ]


def test_customers_may_have_a_null_id_and_null_timestamps(factory):
    records = [factory.customer(null_id=True) for _ in range(5)] + [factory.customer() for _ in range(5)]
    records[0]["created_at"] = None
    records[1]["updated_at"] = None
    report = validate_records(CUSTOMERS, records)
    assert report.passed and report.rejects == []


def test_open_strings_accept_anything_fixed_enums_do_not(factory):
    products = factory.batch("products", 10)
    products[0]["status"] = "some-new-platform-status"
    assert validate_records(PRODUCTS, products).passed
    transactions = factory.batch("transactions", 10)
    transactions[0]["type"] = "chargeback"
    report = validate_records(TRANSACTIONS, transactions)
    error = report.rejects[0].errors[0]
    assert (error["field"], error["check"], error["failure_case"]) == ("type", "isin", "chargeback")
    assert "sale, refund, void, payout, fee, other" in error["message"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (10, True),
        (10.5, True),
        (0, True),
        (-3.25, True),
        (10**30, True),
        (True, False),
        ("10.5", False),
        ([10], False),
        ({"amount": 10}, False),
    ],
)
def test_numeric_accepts_json_numbers_only(factory, value, ok):
    records = factory.batch("transactions", 5)
    records[2]["amount"] = value
    report = validate_records(TRANSACTIONS, records)
    assert report.passed is ok
    if not ok:
        assert _only_errors(report) == [[("amount", "json_type")]]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2024-03-01T10:00:00.000Z", True),
        ("2024-03-01T10:00:00+02:00", True),
        ("2024-03-01T10:00:00.123456-05:30", True),
        ("2024-03-01T10:00:00", True),
        ("2024-03-01", True),
        ("01/03/2024", False),
        ("2024-02-30T10:00:00Z", False),
        ("2024-03-01T24:61:00Z", False),
        ("now", False),
        ("today", False),
        ("", False),
        ("NaT", False),
        ("nan", False),
        (1709287200000, False),
    ],
)
def test_timestamps_must_be_iso_8601(factory, value, ok):
    records = factory.batch("customers", 5)  # created_at is nullable there: a bad string must not pass as null
    records[1]["created_at"] = value
    report = validate_records(CUSTOMERS, records)
    assert report.passed is ok, report.rejects
    if not ok:
        expected = "json_type" if not isinstance(value, str) else "timestamp"
        assert _only_errors(report) == [[("created_at", expected)]]
        assert report.rejects[0].errors[0]["failure_case"] == value


def test_booleans_must_be_json_booleans(factory):
    records = factory.batch("products", 5)
    records[0]["variants"][0]["requires_shipping"] = 1
    records[1]["variants"][1]["requires_shipping"] = "false"
    report = validate_records(PRODUCTS, records)
    assert _only_errors(report) == [
        [("variants[0].requires_shipping", "json_type")],
        [("variants[1].requires_shipping", "json_type")],
    ]


def test_records_that_are_not_objects_are_rejected(factory):
    records = [*factory.batch("orders", 3), "oops", None, [1, 2]]
    report = validate_records(ORDERS, records)
    assert report.total == 6 and len(report.valid) == 3
    assert [r.record for r in report.rejects] == ["oops", None, [1, 2]]
    assert report.rejects[0].errors == [
        {
            "field": "$",
            "check": "record_type",
            "failure_case": "oops",
            "message": "each orders record should be an object, got string",
        }
    ]


def test_an_empty_batch_passes():
    report = validate_records(ORDERS, [])
    assert report.passed and report.total == 0 and report.reject_rate == 0.0
    assert report.metadata()["total"] == 0


def test_a_batch_with_no_line_items_at_all_validates(factory):
    records = [factory.order(line_items=0) for _ in range(5)]
    assert validate_records(ORDERS, records).passed


def test_records_lacking_optional_keys_here_and_there_take_the_exact_path(factory):
    """Not every row has every key: the one-pass read fails and the key-by-key read must agree."""
    records = factory.batch("orders", 20)
    del records[3]["platform_id"]
    del records[4]["line_items"][0]["variant_id"]
    records[5]["order_number"] = 1001
    report = validate_records(ORDERS, records)
    assert _only_errors(report) == [[("order_number", "json_type")]]
