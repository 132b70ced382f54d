"""Retry policy against a scripted loopback server: what is retried, how often, and how it ends."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter import (
    BadRequest,
    ConnectionDisabled,
    InvalidCredentials,
    NeedsUpdate,
    NetworkError,
    NotFound,
    ProductNotReady,
    ProtocolError,
    RateLimited,
    RetriesExhausted,
    RutterClient,
    RutterError,
    ServerError,
)
from rutter_pipeline_tests.rutter.conftest import ClientFactory
from rutter_pipeline_tests.rutter.scripted_server import Reply, ScriptedServer, Seen

TOKEN = "access-scripted-retry-token-42"
OK = {
    "connection": {},
    "orders": [{"id": "o1", "created_at": "2026-01-14T10:00:00.000Z"}],
    "next_cursor": None,
}


def first_then_ok(bad: Reply, times: int = 1):
    def handler(seen: Seen) -> Reply:
        handler.calls += 1  # type: ignore[attr-defined]
        return bad if handler.calls <= times else Reply(body=OK)  # type: ignore[attr-defined]

    handler.calls = 0  # type: ignore[attr-defined]
    return handler


def error_body(code: str, message: str = "nope") -> dict:
    return {"error_type": "CONNECTION_ERROR", "error_code": code, "error_message": message}


@pytest.mark.parametrize(
    "bad",
    [
        Reply(body=b'{"connection": {}, "orders": [{"id": "o1"'),  # cut short, no length mismatch
        Reply(body=OK, truncate_to=30),  # Content-Length says more than arrives
        Reply(drop=True),  # connection closed without an answer
        Reply(500, error_body("INTERNAL")),
        Reply(503, b"<html>upstream unavailable</html>"),
        Reply(429, error_body("RATE_LIMIT_EXCEEDED")),
    ],
    ids=["broken-json", "truncated", "dropped", "500", "503-html", "429"],
)
def test_transient_failures_are_retried(scripted: ScriptedServer, scripted_client: RutterClient, bad: Reply) -> None:
    scripted.handler = first_then_ok(bad, times=2)
    records = [r for p in scripted_client.iter_pages(ORDERS, TOKEN) for r in p.records]
    assert records == OK["orders"]
    assert len(scripted.seen) == 3
    stats = scripted_client.stats.snapshot()
    assert stats["retries"] == 2
    assert stats["requests"] == 3
    assert sum(stats["errors"].values()) == 2


@pytest.mark.parametrize(
    ("reply", "cls", "code"),
    [
        (Reply(401, error_body("INVALID_CREDENTIALS")), InvalidCredentials, "INVALID_CREDENTIALS"),
        (Reply(409, error_body("PRODUCT_NOT_READY")), ProductNotReady, "PRODUCT_NOT_READY"),
        (
            Reply(400, error_body("PRODUCT_NOT_READY")),
            ProductNotReady,
            "PRODUCT_NOT_READY",
        ),  # code beats status
        (Reply(403, error_body("CONNECTION_DISABLED")), ConnectionDisabled, "CONNECTION_DISABLED"),
        (Reply(403, error_body("NEEDS_UPDATE")), NeedsUpdate, "NEEDS_UPDATE"),
        (Reply(400, error_body("MISSING_PARAM")), BadRequest, "MISSING_PARAM"),
        (Reply(404, error_body("NOT_FOUND")), NotFound, "NOT_FOUND"),
        (Reply(410, b""), NotFound, None),
        (Reply(401, b"unauthorized"), InvalidCredentials, None),
        (Reply(403, error_body("PRODUCT_NOT_ALLOWED")), RutterError, "PRODUCT_NOT_ALLOWED"),
    ],
)
def test_client_errors_are_typed_and_never_retried(
    scripted: ScriptedServer, scripted_client: RutterClient, reply: Reply, cls: type, code: str | None
) -> None:
    reply.headers["X-Rutter-Request-ID"] = "req-123"
    scripted.handler = lambda _seen: reply
    with pytest.raises(RutterError) as info:
        list(scripted_client.iter_pages(ORDERS, TOKEN))
    assert type(info.value) is cls
    assert info.value.status == reply.status
    assert info.value.error_code == code
    assert info.value.request_id == "req-123"
    assert info.value.url is not None and "access_token=***" in info.value.url
    assert TOKEN not in str(info.value)
    assert len(scripted.seen) == 1


def test_product_not_ready_says_what_to_do(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    scripted.handler = lambda _seen: Reply(409, error_body("PRODUCT_NOT_READY", "not yet ready"))
    with pytest.raises(ProductNotReady, match="initial sync is still running: retry after its INITIAL_UPDATE"):
        list(scripted_client.iter_pages(ORDERS, TOKEN))


def test_retry_after_is_honoured(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    scripted.handler = first_then_ok(Reply(429, error_body("RATE_LIMIT_EXCEEDED"), {"Retry-After": "0.4"}))
    list(scripted_client.iter_pages(ORDERS, TOKEN))
    gap = scripted.seen[1].at - scripted.seen[0].at
    assert 0.4 <= gap < 1.0
    assert scripted_client.stats.snapshot()["throttled"] == 1


def test_exhausted_retries_wrap_the_last_cause(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    scripted.handler = lambda _seen: Reply(502, error_body("BAD_GATEWAY", "upstream down"))
    with pytest.raises(RetriesExhausted) as info:
        list(scripted_client.iter_pages(ORDERS, TOKEN))
    err = info.value
    assert err.attempts == 4 and len(scripted.seen) == 4
    assert isinstance(err.last, ServerError) and err.__cause__ is err.last
    assert err.last.__cause__ is None and err.last.__context__ is None
    assert "gave up after 4 attempts" in str(err) and "upstream down" in str(err)
    assert "Rutter kept failing" in str(err)
    assert TOKEN not in str(err) and TOKEN not in repr(err)
    assert scripted_client.stats.snapshot()["retries"] == 3


def test_retry_budget_in_time_stops_before_attempts_run_out(
    scripted: ScriptedServer, client_for: ClientFactory
) -> None:
    client = client_for(scripted, max_attempts=50, max_retry_time_s=0.5, backoff_initial_s=0.1, backoff_max_s=0.2)
    scripted.handler = lambda _seen: Reply(500, error_body("INTERNAL"))
    started = time.monotonic()
    with pytest.raises(RetriesExhausted):
        list(client.iter_pages(ORDERS, TOKEN))
    assert time.monotonic() - started < 0.8
    assert len(scripted.seen) < 10


def test_timeouts_are_retried_then_exhausted(scripted: ScriptedServer, client_for: ClientFactory) -> None:
    client = client_for(scripted, max_attempts=2, read_timeout_s=0.2)
    scripted.handler = lambda _seen: Reply(body=OK, delay_s=0.5)
    with pytest.raises(RetriesExhausted) as info:
        list(client.iter_pages(ORDERS, TOKEN))
    assert isinstance(info.value.last, NetworkError)
    assert "timed out" in str(info.value)
    assert len(scripted.seen) == 2


def test_a_refused_connection_is_a_network_error(client_for: ClientFactory) -> None:
    nowhere = SimpleNamespace(base_url="http://127.0.0.1:9/versioned")  # discard port: nothing listens
    client = client_for(nowhere, max_attempts=2)
    with pytest.raises(RetriesExhausted) as info:
        client.get_store(TOKEN)
    assert isinstance(info.value.last, NetworkError)
    assert "ConnectionError" in str(info.value)


def test_rate_limited_and_protocol_errors_are_retryable_flags() -> None:
    assert RateLimited("x").retryable and ServerError("x").retryable and NetworkError("x").retryable
    assert ProtocolError("x", retryable=True).retryable and not ProtocolError("x").retryable
    assert not BadRequest("x").retryable and not ProductNotReady("x").retryable
