"""The receiver over real HTTP: signatures, sizes, shapes, dedup, tokens, storage failures, logs."""

from __future__ import annotations

import hashlib
import logging
import socket

import orjson
import psycopg
import pytest
import requests

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.rutter.signatures import sign
from rutter_pipeline.warehouse.embedded import with_database
from rutter_pipeline.webhooks import run_receiver
from rutter_pipeline_tests.webhooks.helpers import (
    SECRET,
    TOKEN,
    connection_event,
    inbox_text,
    post,
    stored_rows,
)

pytestmark = pytest.mark.postgres


def test_a_valid_webhook_is_stored_once_without_its_token(warehouse: str, receiver_url: str) -> None:
    doc = connection_event(
        "CONNECTION_NEEDS_UPDATE",
        update_url="https://link.rutterapi.com/connection/x",
        nested={"access_token": TOKEN, "keep": 1},
    )
    raw = orjson.dumps(doc)
    first = post(receiver_url, raw)
    assert first.status_code == 200 and first.json()["status"] == "stored"
    again = post(receiver_url, raw)  # Rutter delivered it twice
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    [row] = stored_rows(warehouse)
    assert row["id"] == first.json()["id"]
    assert row["body_sha256"] == hashlib.sha256(raw).hexdigest()
    assert (row["type"], row["code"], row["connection_id"]) == (
        "CONNECTION",
        "CONNECTION_NEEDS_UPDATE",
        doc["connection_id"],
    )
    expected = {k: v for k, v in doc.items() if k != "access_token"} | {"nested": {"keep": 1}}
    assert row["payload"] == expected and row["received_at"] is not None and row["processed_at"] is None
    assert TOKEN not in inbox_text(warehouse)
    connection = ConnectionRegistry(warehouse).get(doc["connection_id"])
    assert (connection.state, connection.access_token) == ("pending", TOKEN)


@pytest.mark.parametrize(
    "signature",
    [
        None,  # missing
        sign(b"another body", SECRET),  # valid for another body
        sign(b"x", "not-the-secret"),  # forged with another secret
        "sha256=!!!not-base64",
        "md5=abc",
        "",
    ],
)
def test_bad_or_missing_signatures_are_refused(warehouse: str, receiver_url: str, signature: str | None) -> None:
    body = orjson.dumps(connection_event())
    if signature and signature.startswith("sha256=") and "!" not in signature and "another" not in signature:
        signature = sign(body, "not-the-secret")
    response = post(receiver_url, body, secret=None, signature=signature)
    assert (response.status_code, response.json()) == (401, {"error": "missing or invalid X-Rutter-Signature"})
    assert stored_rows(warehouse) == []
    assert ConnectionRegistry(warehouse).list() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
        (b'[{"type": "CONNECTION", "code": "INITIAL_UPDATE"}]', "body is not a JSON object"),
        (b'"INITIAL_UPDATE"', "body is not a JSON object"),
        (b'{"type": "CONNECTION"}', "body needs string 'type' and 'code' fields"),
        (b'{"type": "CONNECTION", "code": 7}', "body needs string 'type' and 'code' fields"),
        (b'{"type": null, "code": "INITIAL_UPDATE"}', "body needs string 'type' and 'code' fields"),
    ],
)
def test_signed_bodies_that_are_not_webhooks_get_400(
    warehouse: str, receiver_url: str, body: bytes, message: str
) -> None:
    response = post(receiver_url, body)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert stored_rows(warehouse) == []


def test_body_limit(warehouse: str) -> None:
    limit = 2048
    with run_receiver(warehouse, SECRET, max_body_bytes=limit) as url:
        doc = connection_event(padding="")
        doc["padding"] = "x" * (limit - len(orjson.dumps(doc)))
        exact = orjson.dumps(doc)
        assert len(exact) == limit
        assert post(url, exact).status_code == 200  # at the limit: fine
        too_big = orjson.dumps(connection_event(padding="y" * limit))
        declared = post(url, too_big)
        assert (declared.status_code, declared.json()) == (413, {"error": f"body larger than {limit} bytes"})

        def chunks():  # no Content-Length: the receiver must count while reading
            for i in range(0, len(too_big), 500):
                yield too_big[i : i + 500]

        streamed = requests.post(url, data=chunks(), headers={"X-Rutter-Signature": sign(too_big, SECRET)}, timeout=10)
        assert streamed.status_code == 413 and "Content-Length" not in streamed.request.headers
    assert [r["payload"]["padding"] for r in stored_rows(warehouse)] == [doc["padding"]]


def test_health_and_methods(receiver_url: str) -> None:
    root = receiver_url.removesuffix("/webhooks/rutter")
    assert (requests.get(f"{root}/healthz", timeout=5).json()) == {"status": "ok"}
    assert requests.get(receiver_url, timeout=5).status_code == 405


def test_storage_failure_answers_503_so_rutter_retries(pg_server_url: str) -> None:
    missing = with_database(pg_server_url, "no_such_database_for_webhooks")
    with run_receiver(missing, SECRET) as url:
        response = post(url, connection_event())
        assert (response.status_code, response.json()) == (503, {"error": "storage unavailable, retry later"})
        health = requests.get(url.removesuffix("/webhooks/rutter") + "/healthz", timeout=5)
        assert (health.status_code, health.json()) == (503, {"error": "warehouse unavailable"})


def test_a_pooled_connection_killed_by_the_server_is_replaced(warehouse: str, receiver_url: str) -> None:
    assert post(receiver_url, connection_event()).status_code == 200
    with psycopg.connect(warehouse, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed and killed[0] >= 1
    assert post(receiver_url, connection_event()).status_code == 200
    assert len(stored_rows(warehouse)) == 2


def test_no_secret_or_token_in_logs(
    warehouse: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with run_receiver(warehouse, SECRET, access_log=True) as url:
        assert post(url, connection_event()).status_code == 200
        assert post(url, connection_event(), secret="forged-" + SECRET).status_code == 401
        assert post(url, b"{broken").status_code == 400
        assert post(url + f"?access_token={TOKEN}&secret={SECRET}", connection_event("CONNECTION_DISABLED")).ok
    with run_receiver(with_database(warehouse, "missing_db"), SECRET, access_log=True) as url:
        assert post(url, connection_event()).status_code == 503
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "POST /webhooks/rutter HTTP/1.1" in text  # the access log ran, showing the path only
    assert "not stored (OperationalError)" in caplog.text
    assert TOKEN not in text and SECRET not in text


def test_a_sender_that_hangs_up_mid_body_stores_nothing(
    warehouse: str, receiver_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = receiver_url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /webhooks/rutter HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"{" * 10)
    assert post(receiver_url, connection_event()).status_code == 200  # still serving
    assert len(stored_rows(warehouse)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
