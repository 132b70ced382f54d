"""Every endpoint's bodies validate against JSON Schemas derived from Rutter's 2023-03-14 spec,
and the generated data is realistic where the schema cannot say so (totals, money, timestamps)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from rutter_pipeline.sandbox.platforms import PLATFORMS
from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, fetch_all, get

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@cache
def validator(name: str) -> Draft202012Validator:
    resources = [(p.name, Resource.from_contents(json.loads(p.read_text()))) for p in SCHEMAS.glob("*.json")]
    registry = Registry().with_resources(resources)
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text()), registry=registry)


def assert_valid(name: str, doc: object) -> None:
    errors = sorted(validator(name).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def timestamps(doc: object, path: str = "") -> list[tuple[str, str]]:
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(value, str) and (key.endswith("_at") or key.endswith("_date")):
                out.append((f"{path}.{key}", value))
            else:
                out.extend(timestamps(value, f"{path}.{key}"))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.extend(timestamps(value, f"{path}[{i}]"))
    return out


def test_schemas_reject_what_the_spec_forbids():
    """The validators are not vacuous: a record breaking the spec fails them."""
    order = {"id": "x", "payment_status": "paid", "status": "active"}
    assert list(validator("order").iter_errors(order))  # required fields missing
    assert list(validator("error").iter_errors({"error_type": "X"}))


@pytest.fixture(scope="module")
def shops():
    """One merchant per platform the sandbox imitates, plus one pending (not yet synced)."""
    from contextlib import ExitStack

    from rutter_pipeline.sandbox import SandboxConfig, run_sandbox
    from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW

    with ExitStack() as stack:
        sb = stack.enter_context(run_sandbox(SandboxConfig(now=SANDBOX_NOW)))
        conns = {
            p: sb.control.create_connection(platform=p, orders_per_day=60, history_days=40, seed=7) for p in PLATFORMS
        }
        pending = sb.control.create_connection(ready=False, batches=[{"months": 1}])
        sb.control.advance(60 * 24 * 3)  # three days later: records have moved on
        yield sb, conns, pending


WINDOW = {"created_at_min": JAN_14 - 20 * DAY_MS, "created_at_max": JAN_14 + DAY_MS}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_list_and_single_endpoints_validate(shops, platform):
    sb, conns, _ = shops
    token = conns[platform]["access_token"]
    for entity, schema, params in (
        ("orders", "list_orders_response", {"limit": 500, **WINDOW}),
        ("products", "list_products_response", {"limit": 500}),
        ("customers", "list_customers_response", {"limit": 500}),
        ("transactions", "list_transactions_response", {"limit": 500, **WINDOW}),
    ):
        body = get(sb, f"/{entity}", token, **params).json()
        assert body[entity], f"{platform} {entity} empty"
        assert_valid(schema, body)
        for path, value in timestamps(body):
            assert ISO_MS.match(value), (path, value)
        if entity != "transactions":
            one = body[entity][-1]
            if one["id"] is not None:
                single = get(sb, f"/{entity}/{one['id']}", token).json()
                assert_valid(schema.replace("list_", "get_").replace("s_response", "_response"), single)
                assert single[entity[:-1]] == one
    assert_valid("get_store_response", get(sb, "/store", token).json())
    assert_valid("get_access_token_connection_response", get(sb, "/connections/access_token", token).json())
    assert_valid("get_connection_status_response", get(sb, "/connections/status", token).json())


def test_connection_endpoints_validate_in_every_state(shops):
    sb, conns, pending = shops
    assert_valid("list_connections_response", get(sb, "/connections").json())
    fresh = sb.control.create_connection(ready=False, batches=[{"months": 1}, {"months": 2}])
    for token in (pending["access_token"], fresh["access_token"]):
        assert_valid("get_connection_status_response", get(sb, "/connections/status", token).json())
        assert_valid("get_access_token_connection_response", get(sb, "/connections/access_token", token).json())
    victim = conns["WIX"]
    sb.control.action(victim["connection_id"], "disable")
    status = get(sb, "/connections/status", victim["access_token"]).json()
    assert_valid("get_connection_status_response", status)
    assert status["status"]["disabled_status"]["is_disabled"] is True
    sb.control.action(victim["connection_id"], "reconnect")
    for code in (400, 401, 404, 409):
        resp = {
            400: lambda: get(sb, "/orders", victim["access_token"], limit=0),
            401: lambda: get(sb, "/orders", "nope"),
            404: lambda: get(sb, "/orders/00000000-0000-4000-8000-000000000000", victim["access_token"]),
            409: lambda: get(sb, "/orders", fresh["access_token"]),
        }[code]()
        assert resp.status_code == code
        assert_valid("error", resp.json())


def _minor(value: float | int, decimals: int) -> int:
    d = Decimal(str(value))
    assert -d.as_tuple().exponent <= decimals or d == d.to_integral(), value
    return int(d * 10**decimals)


def test_orders_are_internally_consistent(shops):
    sb, conns, _ = shops
    seen_currencies, guests, refunds, cancelled, statuses = set(), 0, 0, 0, set()
    for conn in conns.values():
        orders = fetch_all(sb, "/orders", conn["access_token"], "orders", limit=500, **WINDOW)
        for o in orders:
            dec = 0 if o["iso_currency_code"] == "JPY" else 2
            lines = sum(_minor(li["price"], dec) for li in o["line_items"])
            total = (
                lines
                - _minor(o["total_discount"], dec)
                + _minor(o["total_tax"], dec)
                + _minor(o["total_shipping"], dec)
            )
            assert _minor(o["total_price"], dec) == total, o["id"]
            assert 1 <= len(o["line_items"]) <= 5
            seen_currencies.add(o["iso_currency_code"])
            guests += o["customer"] is None
            statuses.add((o["status"], o["payment_status"], o["fulfillment_status"]))
            cancelled += o["status"] == "cancelled"
            for refund in o.get("refunds", []):
                refunds += 1
                for item in refund["line_items"]:
                    assert item["amount"] is None or isinstance(item["amount"], str)
            assert o["updated_at"] >= o["created_at"]
    assert {"USD", "EUR", "GBP", "JPY", "CAD"} <= seen_currencies
    assert guests and refunds and cancelled
    assert {s[2] for s in statuses} >= {"fulfilled", "unfulfilled", "partial", None}


def test_platform_quirks(shops):
    sb, conns, _ = shops
    woo = fetch_all(sb, "/products", conns["WOO_COMMERCE"]["access_token"], "products", limit=500)
    variant_ids = [v["id"] for p in woo for v in p["variants"]]
    assert len(variant_ids) > len(set(variant_ids)), "WooCommerce variant ids repeat across products"
    assert {p["status"] for p in woo} - {"active", "archived", "inactive", "draft", "unknown"}, "open statuses"
    amazon = fetch_all(sb, "/customers", conns["AMAZON"]["access_token"], "customers", limit=500)
    assert any(c["id"] is None for c in amazon) and any(c["id"] for c in amazon)
    shopify = get(sb, "/orders", conns["SHOPIFY"]["access_token"], limit=50).json()["orders"]
    assert all("source_name" in o and "tags" in o for o in shopify)
    names = " ".join(c["first_name"] + c["last_name"] for c in amazon if c["first_name"])
    assert re.search(r"[^\x00-\x7f]", names), "unicode names"


def test_customers_are_created_by_their_first_order(shops):
    sb, conns, _ = shops
    token = conns["SHOPIFY"]["access_token"]
    customers = fetch_all(sb, "/customers", token, "customers", limit=500)
    orders = {o["id"]: o for o in fetch_all(sb, "/orders", token, "orders", limit=500)}
    checked = 0
    for c in customers:
        assert c["orders"], c
        first = orders.get(c["orders"][0]["id"])
        if first is not None:
            assert first["created_at"] == c["created_at"]
            assert first["customer"]["id"] == c["id"]
            checked += 1
        if len(c["orders"]) > 1:
            last = orders.get(c["orders"][-1]["id"])
            assert last is None or last["created_at"] == c["updated_at"]
    assert checked > 100
