"""The org-wide limiter: one request log in PostgreSQL shared by limiters, processes and machines."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from rutter_pipeline.rutter.config import ClientConfig
from rutter_pipeline.rutter.limiter import RequestLimiter
from rutter_pipeline.rutter.rate_buckets import (
    PG_SCHEMA,
    RATE_LIMIT_URL_ENV,
    org_key,
    resolve_backend,
)
from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline.settings import Settings
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.rutter.org_limit_run import job_for, logged_sandbox, max_in_window, run_workers

# As the issue asks: the sandbox enforces Rutter's 500 / 10 s, the processes use our default 450.
SANDBOX_LIMIT = 500
ORG_LIMIT = 450


def backend_from(env: dict[str, str]):
    """The backend a client built from these settings limits itself in."""
    settings = Settings.from_env({"RUTTER_CLIENT_ID": "org", "RUTTER_CLIENT_SECRET": "s3cret-value", **env})
    return resolve_backend(ClientConfig.from_settings(settings).rate_limit_url)


def test_the_in_process_fallback_is_chosen_only_without_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend(None, None).kind == "memory"
    assert backend_from({}).kind == "memory"
    assert backend_from({"WAREHOUSE_URL": "postgresql://u:pw@db/wh"}).kind == "postgres"
    assert backend_from({"WAREHOUSE_URL": "postgresql://db/wh", RATE_LIMIT_URL_ENV: "memory"}).kind == "memory"
    redis = backend_from({"WAREHOUSE_URL": "postgresql://db/wh", RATE_LIMIT_URL_ENV: "redis://:pw@cache:6379/0"})
    assert redis.kind == "redis" and "pw" not in redis.describe() and "pw" not in repr(redis)
    with pytest.raises(ValueError, match="postgresql://, redis://"):
        resolve_backend("mysql://db/x")
    monkeypatch.delenv(RATE_LIMIT_URL_ENV, raising=False)
    env = {"RUTTER_CLIENT_ID": "org", "RUTTER_CLIENT_SECRET": "s3cret-value"}
    assert ClientConfig.from_settings(Settings.from_env(env)).rate_limit_url is None
    with_wh = ClientConfig.from_settings(Settings.from_env({**env, "WAREHOUSE_URL": "postgresql://db/wh"}))
    assert with_wh.rate_limit_url == "postgresql://db/wh" and "postgresql" not in repr(with_wh)
    assert RequestLimiter(5).backend.kind == "memory"


def test_a_connection_gets_at_most_its_share_of_the_limit() -> None:
    limiter = RequestLimiter(10, period_s=0.5, connection_share=0.5)
    started = time.monotonic()
    for token in ["a"] * 5 + ["b"] * 5:  # two connections, each within its share: no wait
        limiter.acquire(connection=token)
    assert time.monotonic() - started < 0.3
    waited = limiter.acquire(connection="a")  # a sixth for "a" waits for its own window
    assert waited >= 0.3
    limiter.close()


pg = pytest.mark.postgres


@pg
def test_two_limiters_share_one_postgres_bucket(pg_url: str) -> None:
    backend = resolve_backend(None, pg_url)
    key = org_key("http://rutter.test/versioned", "client-1")
    first = RequestLimiter(5, period_s=1.0, backend=backend, org=key)
    second = RequestLimiter(5, period_s=1.0, backend=backend, org=key)
    other_org = RequestLimiter(5, period_s=1.0, backend=backend, org=org_key("http://rutter.test/versioned", "x"))
    try:
        for _ in range(5):
            assert first.acquire() < 0.3
        # The second limiter sees the first one's requests: it waits for the window to pass.
        assert second.acquire() >= 0.6
        assert other_org.acquire() < 0.3  # another org has a log of its own
        with psycopg.connect(pg_url) as conn:
            tables = {
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (PG_SCHEMA,)).fetchall()
            }
        assert f"ratelimit___rutter_{key}" in tables and len(tables) == 2
        assert not any("client" in t for t in tables)
    finally:
        for limiter in (first, second, other_org):
            limiter.close()


@pg
def test_a_cancelled_wait_on_the_shared_bucket_stops_at_once(pg_url: str) -> None:
    limiter = RequestLimiter(2, period_s=10.0, backend=resolve_backend(pg_url), org="cancel")
    try:
        limiter.acquire()
        limiter.acquire()
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(InterruptedError):
            limiter.acquire(cancel.is_set)
        assert time.monotonic() - started < 2.0
    finally:
        limiter.close()


@pg
def test_bulk_traffic_leaves_its_share_to_syncs_in_another_process_limiter(pg_url: str) -> None:
    """Range loads may hold at most the bulk share; a sync finds the rest free at once."""
    backend = resolve_backend(pg_url)
    key = org_key("http://rutter.test/versioned", "fair")
    loads = RequestLimiter(10, period_s=1.0, backend=backend, org=key, bulk_share=0.5)
    syncs = RequestLimiter(10, period_s=1.0, backend=backend, org=key, bulk_share=0.5)
    try:
        for _ in range(5):
            assert loads.acquire(bulk=True) < 0.3
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(InterruptedError):  # a sixth bulk request waits for the window...
            loads.acquire(cancel.is_set, bulk=True)
        started = time.monotonic()
        for _ in range(5):  # ...while the other half stays free for syncs, in another limiter
            syncs.acquire()
        assert time.monotonic() - started < 0.3
    finally:
        loads.close()
        syncs.close()


TRANSIT_S = 0.25  # most a request may spend between leaving the limiter and the sandbox's stamp


@pg
def test_three_processes_stay_under_the_org_limit_as_the_sandbox_counts(pg_url: str) -> None:
    """Three spawned processes against a sandbox enforcing 500 / 10 s, sharing our 450 / 10 s in PostgreSQL."""
    config = SandboxConfig(now=SANDBOX_NOW, seed=1, connections=0, rate_limit_per_10s=SANDBOX_LIMIT)
    with logged_sandbox(config) as (sandbox, log):
        # 3 x 250 orders at one per page: 750 requests, more than one window's worth of either limit.
        conns = [sandbox.control.create_connection(orders_per_day=50, history_days=7, seed=i) for i in range(3)]
        last_day = SANDBOX_NOW.date() - timedelta(days=1)
        jobs = [
            # connection_share 1: the org limit alone must hold them
            job_for(sandbox, c, pg_url, ORG_LIMIT, last_day, days=5, page_limit=1, connection_share=1.0)
            for c in conns
        ]
        results = run_workers(jobs)
        stats = sandbox.control.stats()
    assert all("error" not in r for r in results), results
    total = sum(r["requests"] for r in results)
    assert total > SANDBOX_LIMIT + 100  # unlimited, they would have got 429s
    assert len(log.arrivals) == total == stats["requests_total"]
    assert sum(r["throttled"] for r in results) == 0
    assert not any("429" in by_status for by_status in stats["requests"].values())
    # The limiter holds the limit on its own clock; the sandbox stamps arrivals after a transit time that
    # varies under load (451 seen once on a loaded machine). A window shortened by the transit we allow
    # (TRANSIT_S) must still hold at most the limit: a limiter letting 10% more through fails it.
    assert max_in_window(log.arrivals, 10.0 - TRANSIT_S) <= ORG_LIMIT
    assert max(log.arrivals) - min(log.arrivals) >= 10.0  # the later requests waited for a window to pass
    assert all(r["records_fetched"] > 0 for r in results)


def test_two_limiters_share_one_redis_bucket() -> None:
    """Runs where a Redis server listens on the default loopback port (fails in CI without one, else skips)."""
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI") == "true":  # CI runs on a machine with Redis as a service: say it is down
            pytest.fail("CI: no Redis server on 127.0.0.1:6379 (start the redis-server service)")
        pytest.skip("no Redis server on 127.0.0.1:6379")
    key = org_key("http://rutter.test/versioned", f"redis-{time.time_ns()}")
    first = RequestLimiter(5, period_s=1.0, backend=resolve_backend(url), org=key)
    second = RequestLimiter(5, period_s=1.0, backend=resolve_backend(url), org=key)
    try:
        for _ in range(5):
            assert first.acquire() < 0.3
        assert second.acquire() >= 0.6
    finally:
        first.close()
        second.close()
        redis.Redis.from_url(url).delete(f"rutter-pipeline:rate-limit:{key}")
