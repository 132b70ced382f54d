"""End to end with real parts: pages served by the sandbox over HTTP, fetched by the Rutter client,
validated page by page and merged, as the landing asset does; the sandbox's schema-change injection
(drop, retype, add a field, corrupt records) must come out as the right verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from rutter_pipeline.entities import ENTITIES
from rutter_pipeline.rutter import RutterClient, day_window_ms
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline.validation import DriftField, ValidationReport, validate_records

DAY = date(2026, 1, 13)  # inside the fixed-clock sandbox's history


@pytest.fixture
def client(sandbox: SandboxHandle) -> Iterator[RutterClient]:
    client = RutterClient(
        base_url=sandbox.base_url,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        max_requests_per_10s=1_000_000,
        page_limit=100,
    )
    yield client
    client.close()


@pytest.fixture
def conn(sandbox: SandboxHandle) -> dict:
    return sandbox.control.create_connection(platform="SHOPIFY", orders_per_day=250, history_days=4)


def _validate_day(client: RutterClient, conn: dict, entity: str, tolerance: float = 0.0) -> ValidationReport:
    spec = ENTITIES[entity]
    start, end = day_window_ms(DAY)
    report = validate_records(spec, [], tolerance=tolerance)
    pages = 0
    for page in client.iter_created(spec, conn["access_token"], start, end):
        report = report.merge(validate_records(spec, page.records, tolerance=tolerance))
        pages += 1
    assert pages > 1 or entity != "orders", "the day should span several pages"
    return report


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_what_the_sandbox_serves_validates_cleanly(sandbox, client, conn, entity):
    report = _validate_day(client, conn, entity)
    assert report.total > 0
    assert report.passed, report.metadata()
    assert report.drift == [] and report.rejects == []


def test_a_retyped_field_is_a_schema_failure(sandbox, client, conn):
    sandbox.control.mutate(
        connection_id=conn["connection_id"], entity="orders", day=DAY, kind="retype_field", field="total_price"
    )
    report = _validate_day(client, conn, "orders", tolerance=1.0)
    assert [(f["field"], f["kind"], f["count"]) for f in report.schema_failures] == [
        ("total_price", "retyped", report.total)
    ]
    assert not report.passed


def test_a_dropped_required_field_is_a_schema_failure(sandbox, client, conn):
    sandbox.control.mutate(
        connection_id=conn["connection_id"], entity="orders", day=DAY, kind="drop_field", field="payment_status"
    )
    report = _validate_day(client, conn, "orders", tolerance=1.0)
    assert [(f["field"], f["kind"]) for f in report.schema_failures] == [("payment_status", "missing")]
    assert report.total == len(report.rejects) > 0


def test_an_added_field_is_drift_only(sandbox, client, conn):
    sandbox.control.mutate(
        connection_id=conn["connection_id"], entity="orders", day=DAY, kind="add_field", field="risk_score"
    )
    report = _validate_day(client, conn, "orders")
    assert report.passed
    assert report.drift == [DriftField("orders.risk_score", report.total, "string")]


def test_a_few_corrupt_records_are_rejected_with_their_reason(sandbox, client, conn):
    result = sandbox.control.mutate(
        connection_id=conn["connection_id"], entity="orders", day=DAY, kind="corrupt_records", count=3
    )
    report = _validate_day(client, conn, "orders", tolerance=0.05)
    assert sorted(r.record["id"] for r in report.rejects) == result["record_keys"]
    assert {(e["field"], e["check"], e["failure_case"]) for r in report.rejects for e in r.errors} == {
        ("status", "isin", "sandbox_corrupt")
    }
    assert report.schema_failures == [] and report.passed  # 3 of a few hundred is under 5 %
    assert len(report.valid) == report.total - 3
    assert report.metadata()["error_counts"] == {"isin": 3}
