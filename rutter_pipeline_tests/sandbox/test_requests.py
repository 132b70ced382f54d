"""Auth, headers, parameters and rate limiting of the Rutter surface."""

from __future__ import annotations

import base64

import pytest
import requests

from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.helpers import JAN_14, VERSION, get, session


@pytest.fixture
def token(sandbox):
    return sandbox.control.create_connection(orders_per_day=30, history_days=5)["access_token"]


def test_bad_or_missing_basic_auth_is_401(sandbox, token):
    url = sandbox.base_url + "/orders"
    headers = {"X-Rutter-Version": VERSION}
    for auth in (None, (sandbox.client_id, "wrong"), ("someone", sandbox.client_secret)):
        resp = requests.get(url, params={"access_token": token}, auth=auth, headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.json()["error_code"] == "INVALID_CREDENTIALS"
    garbage = {**headers, "Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}
    assert requests.get(url, params={"access_token": token}, headers=garbage, timeout=10).status_code == 401
    assert sandbox.client_secret not in resp.text


def test_version_header_is_required(sandbox, token):
    resp = session(sandbox, version=None).get(sandbox.base_url + "/orders", params={"access_token": token})
    assert resp.status_code == 400 and resp.json()["error_code"] == "MISSING_VERSION_HEADER"
    resp = session(sandbox, version="1999-01-01").get(sandbox.base_url + "/orders", params={"access_token": token})
    assert resp.status_code == 400 and resp.json()["error_type"] == "INVALID_REQUEST"
    assert session(sandbox, version=None).get(sandbox.base_url + "/connections").status_code == 400


def test_access_token_missing_is_400_unknown_is_401(sandbox, token):
    for path in (
        "/orders",
        "/products",
        "/customers",
        "/transactions",
        "/store",
        "/connections/status",
        "/connections/access_token",
    ):
        missing = get(sandbox, path)
        assert missing.status_code == 400, path
        assert missing.json()["error_code"] == "MISSING_ACCESS_TOKEN"
        unknown = get(sandbox, path, "6f1c1a3e-0000-4000-8000-000000000000")
        assert unknown.status_code == 401 and unknown.json()["error_code"] == "INVALID_CREDENTIALS", path
    assert get(sandbox, "/orders", token).status_code == 200


@pytest.mark.parametrize(
    "path, params, fragment",
    [
        ("/orders", {"created_at_min": "yesterday"}, "created_at_min"),
        ("/orders", {"updated_at_max": "1.5"}, "updated_at_max"),
        ("/orders", {"limit": 501}, "limit"),
        ("/orders", {"limit": 0}, "limit"),
        ("/orders", {"limit": "ten"}, "limit"),
        ("/orders", {"cursor": "not-a-cursor"}, "cursor"),
        ("/orders", {"created_at_min": 10, "created_at_max": 5}, "after"),
        ("/orders", {"payment_status": "lost"}, "payment_status"),
        ("/customers", {"created_at_min": JAN_14}, "created_at"),
        ("/customers", {"created_at_max": JAN_14}, "created_at"),
        ("/transactions", {"sort": "sideways"}, "sort"),
        ("/orders", {"force_fetch": "yes"}, "force_fetch"),
    ],
)
def test_bad_parameters_are_400(sandbox, token, path, params, fragment):
    resp = get(sandbox, path, token, **params)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error_type"] == "INVALID_REQUEST" and fragment in body["error_message"]


def test_cursor_reused_with_other_filters_is_400(sandbox, token):
    first = get(sandbox, "/orders", token, limit=5, created_at_min=JAN_14).json()
    ok = get(sandbox, "/orders", token, limit=7, created_at_min=JAN_14, cursor=first["next_cursor"])
    assert ok.status_code == 200  # the page size may change between pages
    moved = get(sandbox, "/orders", token, limit=5, created_at_min=JAN_14 + 1, cursor=first["next_cursor"])
    assert moved.status_code == 400 and "different filters" in moved.json()["error_message"]


def test_unknown_ids_are_404(sandbox, token):
    for path in ("/orders/nope", "/products/00000000-0000-4000-8000-000000000000", "/customers/x"):
        resp = get(sandbox, path, token)
        assert resp.status_code == 404 and resp.json()["error_code"] == "NOT_FOUND"


def test_rate_limit_is_a_sliding_window_per_client(sandbox_factory):
    sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, rate_limit_per_10s=20))
    tok = sb.control.create_connection(orders_per_day=5, history_days=2)["access_token"]
    s = session(sb)
    codes = [s.get(sb.base_url + "/store", params={"access_token": tok}).status_code for _ in range(25)]
    assert codes[:20] == [200] * 20 and set(codes[20:]) == {429}
    limited = s.get(sb.base_url + "/orders", params={"access_token": tok})
    assert limited.json()["error_code"] == "RATE_LIMIT_EXCEEDED"
    assert sb.control.stats()["requests"]["/store"] == {"200": 20, "429": 5}
    assert sb.control.health()["ok"]  # the control API is never rate limited


def test_default_rate_limit_is_rutters_500(sandbox):
    tok = sandbox.control.create_connection(orders_per_day=1, history_days=1)["access_token"]
    s = session(sandbox)
    codes = [s.get(sandbox.base_url + "/store", params={"access_token": tok}).status_code for _ in range(502)]
    assert codes.count(200) == 500 and codes.count(429) == 2


def test_secrets_never_reach_logs_or_output(sandbox_factory, caplog, capfd):
    import logging

    caplog.set_level(logging.DEBUG)
    # urllib3 logs the URLs this test's own client requests (with the token in the query): not the sandbox's
    caplog.set_level(logging.INFO, logger="urllib3")
    secret = "very-secret-value-42"
    sb = sandbox_factory(
        SandboxConfig(
            now=SANDBOX_NOW, client_secret=secret, webhook_url="http://127.0.0.1:9/x", webhook_retry_base_seconds=0.001
        )
    )
    conn = sb.control.create_connection(orders_per_day=20, history_days=2)
    token = conn["access_token"]
    get(sb, "/orders", token)
    get(sb, "/orders", "unknown-token")
    get(sb, "/orders", token, limit=9999)
    sb.control.set_faults(rate_5xx=1.0)
    get(sb, "/orders", token)
    sb.control.clear_faults()
    sb.control.wait_for_webhooks()
    assert sb.control.webhook_log()[0]["status"] == "failed"  # a warning was logged
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, repr(sb), repr(SandboxConfig(client_secret=secret))):
        assert secret not in text and token not in text
    assert "failed after" in caplog.text
