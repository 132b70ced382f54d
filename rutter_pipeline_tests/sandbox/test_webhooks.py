"""Webhook delivery: signatures, retries on failure, duplicates and shuffled order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.receiver import webhook_receiver


def expected_signature(body: bytes, secret: str) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_webhooks_are_signed_with_the_client_secret(sandbox_factory):
    with webhook_receiver() as receiver:
        sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, webhook_url=receiver.url, client_secret="s3cr3t"))
        sb.control.create_connection(orders_per_day=500, history_days=3)
        sb.control.advance(20)
        sb.control.wait_for_webhooks()
        got = receiver.accepted()
        assert len(got) > 3
        for r in got:
            assert r.headers["content-type"] == "application/json"
            assert r.headers["x-rutter-signature"] == expected_signature(r.body, "s3cr3t")
            assert r.headers["x-rutter-signature"] != expected_signature(r.body, "other")
            json.loads(r.body)
        assert sb.control.stats()["webhooks"]["delivered"] == len(got)


def test_failed_deliveries_are_retried_with_backoff(sandbox_factory):
    with webhook_receiver(fail_first=3) as receiver:
        sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, webhook_url=receiver.url, webhook_retry_base_seconds=0.02))
        conn = sb.control.create_connection(orders_per_day=5, history_days=2)
        sb.control.wait_for_webhooks()
        assert [r.status for r in receiver.received] == [500, 500, 500, 200]
        assert len({r.body for r in receiver.received}) == 1
        log = sb.control.webhook_log()
        assert log[0]["code"] == "INITIAL_UPDATE" and log[0]["attempts"] == 4 and log[0]["status"] == "delivered"
        assert log[0]["connection_id"] == conn["connection_id"]
        assert conn["access_token"] not in json.dumps(log)  # the log never shows tokens


def test_gives_up_after_six_retries_and_survives_a_dead_receiver(sandbox_factory):
    with webhook_receiver(fail_first=100) as receiver:
        sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, webhook_url=receiver.url, webhook_retry_base_seconds=0.005))
        sb.control.create_connection(orders_per_day=5, history_days=2)
        sb.control.wait_for_webhooks()
        assert len(receiver.received) == 7  # the first attempt and 6 retries
        assert sb.control.stats()["webhooks"]["failed"] == 1
    sb.control.configure_webhooks(url="http://127.0.0.1:9/nothing-listens-here", retry_base=0.001)
    sb.control.create_connection(orders_per_day=5, history_days=2)
    sb.control.wait_for_webhooks()
    failed = sb.control.webhook_log()[-1]
    assert failed["status"] == "failed" and failed["last_error"] and failed["attempts"] == 7


def test_duplicate_and_shuffled_delivery(sandbox_factory):
    with webhook_receiver() as receiver:
        sb = sandbox_factory(
            SandboxConfig(
                now=SANDBOX_NOW, webhook_url=receiver.url, webhook_duplicate=True, webhook_shuffle=True, seed=3
            )
        )
        sb.control.create_connection(orders_per_day=2000, history_days=3)
        sb.control.advance(10)
        sb.control.wait_for_webhooks()
        bodies = [r.body for r in receiver.accepted()]
        assert len(bodies) > 20 and all(bodies.count(b) == 2 for b in bodies)
        ticks = [json.loads(b) for b in bodies if b'"CONNECTION"' not in b]
        stamps = [h[h["type"].lower()]["updated_at"] for h in ticks]
        assert stamps != sorted(stamps), "a shuffled batch arrives out of order"
