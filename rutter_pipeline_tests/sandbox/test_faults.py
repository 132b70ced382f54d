"""Fault injection: every kind is observable by a plain HTTP client, and never hits /_sandbox/."""

from __future__ import annotations

import http.client
import itertools
import time
from datetime import date
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from rutter_pipeline.sandbox import FaultSettings, SandboxConfig
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, get, pages, session


@pytest.fixture
def token(sandbox):
    return sandbox.control.create_connection(orders_per_day=200, history_days=3)["access_token"]


def _codes(sb, tok, n, path="/orders"):
    s = session(sb)
    return [s.get(sb.base_url + path, params={"access_token": tok, "limit": 5}).status_code for _ in range(n)]


def test_injected_429_with_and_without_retry_after(sandbox, token):
    sandbox.control.set_faults(rate_429=1.0)
    resp = get(sandbox, "/orders", token)
    assert resp.status_code == 429 and "Retry-After" not in resp.headers
    assert resp.json()["error_code"] == "RATE_LIMIT_EXCEEDED"
    sandbox.control.set_faults(retry_after_seconds=2)
    assert get(sandbox, "/orders", token).headers["Retry-After"] == "2"
    sandbox.control.clear_faults()
    assert get(sandbox, "/orders", token).status_code == 200


def test_rate_of_server_errors(sandbox, token):
    sandbox.control.set_faults(rate_5xx=0.5, seed=4)
    codes = _codes(sandbox, token, 200)
    errors = [c for c in codes if c != 200]
    assert set(errors) == {500, 502, 503}
    assert 60 < len(errors) < 140
    assert sandbox.control.stats()["faults_injected"]["5xx"] == len(errors)
    assert sandbox.control.health()["ok"]  # never on the control API


def test_bursts_fail_the_next_n_requests(sandbox, token):
    sandbox.control.set_faults(burst_5xx=3)
    assert _codes(sandbox, token, 5) == [503, 503, 503, 200, 200]


def test_slow_responses(sandbox, token):
    sandbox.control.set_faults(delay_seconds=0.3)
    t = time.monotonic()
    assert get(sandbox, "/store", token).status_code == 200
    assert time.monotonic() - t >= 0.3
    with pytest.raises(requests.Timeout):
        session(sandbox).get(sandbox.base_url + "/store", params={"access_token": token}, timeout=0.1)


def test_truncated_bodies_are_200_with_broken_json(sandbox, token):
    sandbox.control.set_faults(rate_truncate=1.0)
    resp = get(sandbox, "/orders", token, limit=20)
    assert resp.status_code == 200 and len(resp.content) > 100
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(resp.content)


def test_dropped_connections_close_without_a_response(sandbox, token):
    sandbox.control.set_faults(rate_drop=1.0)
    parts = urlsplit(sandbox.base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", f"{parts.path}/orders?access_token={token}")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    with pytest.raises(requests.ConnectionError):
        get(sandbox, "/orders", token)
    sandbox.control.clear_faults()
    assert get(sandbox, "/orders", token).status_code == 200
    assert sandbox.control.stats()["requests"]["/orders"]["0"] == 2


def test_faults_can_target_endpoints_and_start_from_config(sandbox_factory):
    sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, faults=FaultSettings(rate_5xx=1.0, endpoints=["/orders"])))
    tok = sb.control.create_connection(orders_per_day=10, history_days=2)["access_token"]
    assert get(sb, "/orders", tok).status_code in (500, 502, 503)
    assert get(sb, "/products", tok).status_code == 200
    with pytest.raises(Exception, match="unknown fault settings"):
        sb.control.set_faults(rate_teapot=1.0)


def _ids(sb, tok, limit=7, **params) -> list[list[str]]:
    return [[o["id"] for o in page["orders"]] for page in pages(sb, "/orders", tok, limit=limit, **params)]


def test_a_share_of_responses_is_slow_and_cursor_requests_can_fail(sandbox, token):
    sandbox.control.set_faults(rate_slow=1.0, slow_seconds=0.3)
    t = time.monotonic()
    assert get(sandbox, "/store", token).status_code == 200
    assert time.monotonic() - t >= 0.3
    sandbox.control.set_faults(rate_slow=0.0, cursor_failures=2)
    first = get(sandbox, "/orders", token, limit=5)
    assert first.status_code == 200  # no cursor: not affected
    cursor = first.json()["next_cursor"]
    codes = [get(sandbox, "/orders", token, limit=5, cursor=cursor).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert sandbox.control.stats()["faults_injected"] == {"slow": 1, "cursor_5xx": 2}


def test_a_record_repeated_across_each_page_boundary(sandbox, token):
    clean = _ids(sandbox, token, created_at_min=JAN_14, created_at_max=JAN_14 + DAY_MS - 1)
    sandbox.control.set_faults(repeat_boundary=True)
    repeated = _ids(sandbox, token, created_at_min=JAN_14, created_at_max=JAN_14 + DAY_MS - 1)
    assert len(repeated) > 2
    assert all(page[-1] == nxt[0] for page, nxt in itertools.pairwise(repeated))  # the boundary record twice
    flat = [i for page in repeated for i in page]
    assert list(dict.fromkeys(flat)) == [i for page in clean for i in page] and len(flat) > len(set(flat))


def test_records_change_between_pages_when_the_clock_steps(sandbox, token):
    before = sandbox.control.now()
    sandbox.control.set_faults(advance_minutes_per_page=120)
    walk = _ids(sandbox, token, limit=60, updated_at_min=JAN_14 - 2 * DAY_MS)
    flat = [i for page in walk for i in page]
    assert len(flat) > len(set(flat)), "no order changed while being paged: the walk saw each once"
    steps = sandbox.control.stats()["faults_injected"]["clock_step"]
    assert steps == len(walk) and (sandbox.control.now() - before).total_seconds() == steps * 120 * 60


def test_set_field_serves_a_value_at_a_path_of_chosen_records(sandbox, token):
    conn = sandbox.control.list_connections()[0]["connection_id"]
    day_ms = (JAN_14, JAN_14 + DAY_MS - 1)
    clean = sandbox.control.ground_truth("orders", conn, created_at_min=day_ms[0], created_at_max=day_ms[1])
    sandbox.control.mutate(connection_id=conn, entity="orders", day=date(2026, 1, 14), kind="set_field",
                           field="line_items.0.quantity", value="three", index=2, count=2)  # fmt: skip
    served = [o for page in pages(sandbox, "/orders", token, created_at_min=day_ms[0], created_at_max=day_ms[1],
                                  limit=50) for o in page["orders"]]  # fmt: skip
    changed = [i for i, (a, b) in enumerate(zip(clean, served, strict=True)) if a != b]
    assert changed == [2, 3] and {served[i]["line_items"][0]["quantity"] for i in changed} == {"three"}
    assert served == sandbox.control.ground_truth("orders", conn, created_at_min=day_ms[0], created_at_max=day_ms[1])
