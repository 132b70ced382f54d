"""Where the org's request log lives: PostgreSQL, Redis or this process (pyrate-limiter buckets).

Rutter counts requests per organisation (500 / 10 s over every connection, process and machine),
so the log of recent requests must be shared by everything that uses the same credentials:

- ``postgresql://...`` (the default: the warehouse's ``WAREHOUSE_URL``): pyrate-limiter's
  ``PostgresBucket``, one table per org in the ``rate_limit`` schema. Timestamps come from the
  database's clock, so machines with skewed clocks still agree.
- ``redis://...`` (``RUTTER_RATE_LIMIT_URL``): pyrate-limiter's ``RedisBucket``, one sorted set per
  org. It dates requests by the local clock: keep the machines' clocks in sync (NTP).
- ``memory`` (or no URL at all): the process-local ``InMemoryBucket``, the named fallback for one
  process (tests, a laptop without the warehouse). It does not protect against other processes.

The org is named by a hash of base URL and client id, never the secret, so neither table names
nor Redis keys reveal anything, and different orgs (or the sandbox and production) never share.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pyrate_limiter import AbstractBucket, InMemoryBucket, Rate

log = logging.getLogger("rutter_pipeline.rutter.rate_buckets")

RATE_LIMIT_URL_ENV = "RUTTER_RATE_LIMIT_URL"
MEMORY = "memory"
PG_SCHEMA = "rate_limit"
_PG_SCHEMES = {"postgres", "postgresql"}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}


@dataclass(frozen=True)
class RateLimitBackend:
    """The chosen store of the org's request log; the URL (it may hold a password) is not shown."""

    kind: str  # "postgres", "redis" or "memory"
    url: str | None = field(default=None, repr=False)
    reason: str = ""

    @property
    def shared(self) -> bool:
        """Whether other processes and machines see the same log."""
        return self.kind != MEMORY

    def describe(self) -> str:
        """Kind and host, for logs: no user name, password or query string."""
        if not self.url:
            return self.kind
        parts = urlsplit(self.url)
        host = parts.hostname or "local socket"
        return f"{self.kind} at {host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def resolve_backend(rate_limit_url: str | None, warehouse_url: str | None = None) -> RateLimitBackend:
    """``rate_limit_url`` if set (a URL or ``memory``), else the warehouse, else this process."""
    if rate_limit_url:
        url, reason = rate_limit_url.strip(), RATE_LIMIT_URL_ENV
    elif warehouse_url:
        url, reason = warehouse_url, "WAREHOUSE_URL"
    else:
        return RateLimitBackend(MEMORY, None, "no RUTTER_RATE_LIMIT_URL and no WAREHOUSE_URL")
    if url.lower() == MEMORY:
        return RateLimitBackend(MEMORY, None, f"{reason}=memory")
    scheme = urlsplit(url).scheme.lower()
    if scheme in _PG_SCHEMES:
        return RateLimitBackend("postgres", url, reason)
    if scheme in _REDIS_SCHEMES:
        return RateLimitBackend("redis", url, reason)
    raise ValueError(f"{reason} must be a postgresql://, redis:// URL or 'memory', got a {scheme or 'scheme-less'} URL")


def org_key(base_url: str, client_id: str | None) -> str:
    """A stable, secret-free name for one org at one API: 16 hex digits of SHA-256."""
    raw = f"{base_url.rstrip('/')}\n{client_id or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def build_bucket(backend: RateLimitBackend, key: str, rates: list[Rate]) -> AbstractBucket:
    """A bucket holding the org's request log in ``backend`` (tables and keys are made on first use)."""
    if backend.kind == MEMORY:
        return InMemoryBucket(rates)
    assert backend.url is not None
    if backend.kind == "postgres":
        return _postgres_bucket(backend.url, key, rates)
    if backend.kind == "redis":
        return _redis_bucket(backend.url, key, rates)
    raise ValueError(f"unknown rate limit backend {backend.kind!r}")


def _configure_pg(conn: Any) -> None:
    """Session settings of every limiter connection.

    ``PostgresBucket`` stores ``TIMESTAMP`` (without time zone) from ``TO_TIMESTAMP`` and reads it
    back through ``::TIMESTAMPTZ``: both conversions use the session's time zone, so every process
    must use the same one (and one without daylight saving) or they would read each other's
    entries hours apart. The search path puts the org tables in their own schema.
    """
    conn.autocommit = True
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute(f"SET search_path TO {PG_SCHEMA}")
    conn.autocommit = False


def _postgres_bucket(url: str, key: str, rates: list[Rate]) -> AbstractBucket:
    try:
        import psycopg
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "the PostgreSQL rate limit needs psycopg-pool (pip install 'psycopg[pool]'), "
            "or set RUTTER_RATE_LIMIT_URL=memory to limit per process only"
        ) from exc
    from pyrate_limiter import PostgresBucket

    # Several processes may start at once: CREATE SCHEMA IF NOT EXISTS alone can still race.
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('rutter_pipeline.rate_limit.schema'))")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
    # Two connections cover a bucket: the limiter serialises its own puts (one at a time under its
    # lock) and pyrate-limiter's leaker thread deletes expired entries now and then. None is kept
    # open while idle (min_size 0): a run worker holds at most four warehouse connections for its
    # org and bulk buckets, and only while it sends requests.
    pool = ConnectionPool(
        url,
        min_size=0,
        max_size=2,
        configure=_configure_pg,
        check=ConnectionPool.check_connection,
        timeout=30,
        name=f"rutter-rate-limit-{key}",
        open=True,
    )
    try:
        return PostgresBucket(pool, f"rutter_{key}", rates)
    except BaseException:
        pool.close()
        raise


def _redis_bucket(url: str, key: str, rates: list[Rate]) -> AbstractBucket:
    try:
        from redis import Redis
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "the Redis rate limit needs the redis package (pip install redis), "
            "or unset RUTTER_RATE_LIMIT_URL to use the warehouse PostgreSQL"
        ) from exc
    from pyrate_limiter import RedisBucket
    from pyrate_limiter.buckets.redis_bucket import LuaScript

    # The stock script counts entries up to the caller's own timestamp, so an entry that another
    # process dated a little later but stored first is not counted, and N processes can overshoot
    # a window by N - 1. Counting every newer entry too (as PostgresBucket does) closes that gap.
    stock = "redis.call('ZCOUNT', bucket, window_start, now)"
    if stock not in LuaScript.PUT_ITEM:  # pragma: no cover - a pyrate-limiter change to re-check
        raise RuntimeError("pyrate-limiter's Redis script changed; review rate_buckets._redis_bucket")
    script = LuaScript.PUT_ITEM.replace(stock, "redis.call('ZCOUNT', bucket, window_start, '+inf')")
    client = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
    script_sha = str(client.script_load(script))  # the sync client returns the SHA, not an awaitable
    return RedisBucket(rates, client, f"rutter-pipeline:rate-limit:{key}", script_sha)
