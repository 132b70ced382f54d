"""The org-wide client-side rate limiter (pyrate-limiter), shared by every thread, process and machine.

Rutter's limit is per organisation (500 requests / 10 s across all connections and all callers),
so every client of one org must draw from one log of recent requests. ``rate_buckets`` decides
where that log lives: the warehouse PostgreSQL by default, Redis when ``RUTTER_RATE_LIMIT_URL``
points at one, or this process only (the named fallback). Within a process the registry hands out
one limiter per (base URL, client id, rate, backend), so threads share it too.

A sliding-window log guarantees that no window of ``period_s`` seconds ever holds more than
``max_requests`` starts. Callers block until a slot frees up rather than fail: waiting is the
point, and the time spent is measured.

Fair share, two rules in front of the org limit:

- **bulk traffic** (range loads: history backfills and daily loads, ``iter_created``) may use at most
  ``bulk_share`` of the limit in any window, counted in the same shared store as the org limit.
  Bulk requests can then never hold more than that share, so incremental syncs and status calls
  always find the rest free, however many backfill runs go at once on however many machines;
- **one connection** (access token) may use at most ``connection_share`` of the limit, so one large
  merchant in a batch run does not hold up the others. This cap is kept in this process: a
  connection's fetch runs in one process at a time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable

from pyrate_limiter import AbstractBucket, BucketFactory, Duration, InMemoryBucket, Limiter, Rate, RateItem

from rutter_pipeline.rutter.rate_buckets import MEMORY, RateLimitBackend, build_bucket, org_key

log = logging.getLogger("rutter_pipeline.rutter.limiter")

# How long one blocking attempt may wait before the caller gets to check for cancellation.
_SLICE_S = 0.25
# pyrate-limiter dates a request that had to wait by its planned wake-up time, not by when it really
# left (thread scheduling, the lock, the socket write come after), and the server clocks arrivals
# later still. Widening the window by this margin keeps the rate under the limit *as the server
# counts it*; at 10 s it costs 1 % of throughput.
_MARGIN_MS_MIN = 50
_MARGIN_FRACTION = 0.01
_ORG_ITEM = "rutter"
_BULK_SUFFIX = "-bulk"

IN_PROCESS = RateLimitBackend(MEMORY, None, "in-process limiter")


class RateLimiterUnavailable(RuntimeError):
    """The shared rate-limit store cannot be reached; requests stop rather than risk the org's limit."""


class _PerConnectionBuckets(BucketFactory):
    """One in-memory bucket per connection key, all leaked by one background thread."""

    def __init__(self, rates: list[Rate]) -> None:
        self._rates = rates
        self._buckets: dict[str, AbstractBucket] = {}
        self._lock = threading.Lock()

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, time.monotonic_ns() // 1_000_000, weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        with self._lock:
            bucket = self._buckets.get(item.name)
            if bucket is None:
                bucket = self._buckets[item.name] = self.create(InMemoryBucket, list(self._rates))
            return bucket


def _window_ms(period_s: float) -> int:
    period_ms = int(Duration.SECOND * period_s)
    return period_ms + max(_MARGIN_MS_MIN, int(period_ms * _MARGIN_FRACTION))


def _connection_key(token: str) -> str:
    """A name for a connection's bucket that is not its access token (a secret)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class RequestLimiter:
    """A blocking limiter of ``max_requests`` per ``period_s`` seconds, in ``backend`` for org ``org``.

    ``bulk_share`` and ``connection_share`` (0 < share <= 1) cap bulk traffic and one connection at
    that fraction of the limit (see the module docstring).
    """

    def __init__(
        self,
        max_requests: int,
        period_s: float = 10.0,
        *,
        backend: RateLimitBackend | None = None,
        org: str = "local",
        bulk_share: float = 1.0,
        connection_share: float = 1.0,
    ) -> None:
        if max_requests < 1 or period_s <= 0:
            raise ValueError("max_requests must be >= 1 and period_s > 0")
        for name, share in (("bulk_share", bulk_share), ("connection_share", connection_share)):
            if not 0.0 < share <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {share}")
        self.max_requests = max_requests
        self.period_s = period_s
        self.backend = backend or IN_PROCESS
        self.connection_limit = max(1, math.floor(max_requests * connection_share))
        self.bulk_limit = max(1, math.floor(max_requests * bulk_share))
        window_ms = _window_ms(period_s)
        try:
            bucket = build_bucket(self.backend, org, [Rate(max_requests, window_ms)])
            bulk = (
                build_bucket(self.backend, org + _BULK_SUFFIX, [Rate(self.bulk_limit, window_ms)])
                if self.bulk_limit < max_requests
                else None
            )
        except Exception as exc:
            error: RateLimiterUnavailable | None = RateLimiterUnavailable(
                f"cannot set up the rate limit in {self.backend.describe()}: {type(exc).__name__}: {exc}"
            )
        else:
            error = None
        if error is not None:
            raise error
        self._limiter = Limiter(bucket, buffer_ms=5)
        self._bulk = Limiter(bulk, buffer_ms=5) if bulk is not None else None
        self._per_connection: Limiter | None = None
        if self.connection_limit < max_requests:
            factory = _PerConnectionBuckets([Rate(self.connection_limit, window_ms)])
            self._per_connection = Limiter(factory, buffer_ms=5)

    def acquire(
        self, cancelled: Callable[[], bool] | None = None, connection: str | None = None, bulk: bool = False
    ) -> float:
        """Block until a request may start; return the seconds waited.

        ``cancelled`` is polled between short waits so that a cancelled fetch does not sit out
        a full window; when it returns True the wait stops with ``InterruptedError``.
        ``connection`` (an access token; only a hash of it is kept) applies the per-connection cap,
        ``bulk`` the bulk share. The narrower limits are taken first, the org-wide one last, so a
        request never holds an org slot while it waits for its own share.
        """
        started = time.monotonic()
        if connection and self._per_connection is not None:
            self._wait(self._per_connection, _connection_key(connection), cancelled)
        if bulk and self._bulk is not None:
            self._wait(self._bulk, _ORG_ITEM, cancelled)
        self._wait(self._limiter, _ORG_ITEM, cancelled)
        return time.monotonic() - started

    def _wait(self, limiter: Limiter, name: str, cancelled: Callable[[], bool] | None) -> None:
        while True:
            try:
                acquired = limiter.try_acquire(name, blocking=True, timeout=_SLICE_S)
            except Exception as exc:  # the shared store failed (PostgreSQL or Redis down)
                error: RateLimiterUnavailable | None = RateLimiterUnavailable(
                    f"rate limit store {self.backend.describe()} failed: {type(exc).__name__}: {exc}"
                )
            else:
                if acquired:
                    return
                error = None
            if error is not None:
                raise error
            if cancelled is not None and cancelled():
                raise InterruptedError("fetch cancelled while waiting for the rate limiter")

    def close(self) -> None:
        """Stop the leak threads and release the store's connections."""
        for limiter in (self._limiter, self._bulk, self._per_connection):
            if limiter is not None:
                limiter.close()

    def __repr__(self) -> str:
        shares = f"bulk {self.bulk_limit}, connection {self.connection_limit}"
        return f"RequestLimiter({self.max_requests} per {self.period_s:g}s, {shares}, {self.backend.kind})"


_registry: dict[tuple[str, str, int, float, str, str, float, float], RequestLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(
    base_url: str,
    client_id: str | None,
    max_requests: int,
    period_s: float = 10.0,
    *,
    backend: RateLimitBackend | None = None,
    bulk_share: float = 1.0,
    connection_share: float = 1.0,
) -> RequestLimiter:
    """The one limiter of this process for an org (client id) at a base URL, rate and backend.

    ``backend`` defaults to the in-process bucket; ``rate_buckets.resolve_backend`` gives the shared
    one the settings ask for (``ClientConfig.rate_limit_url``).
    """
    backend = backend or IN_PROCESS
    base = base_url.rstrip("/")
    key = (
        base,
        client_id or "",
        max_requests,
        float(period_s),
        backend.kind,
        backend.url or "",
        bulk_share,
        connection_share,
    )
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RequestLimiter(
                max_requests,
                period_s,
                backend=backend,
                org=org_key(base, client_id),
                bulk_share=bulk_share,
                connection_share=connection_share,
            )
            where = "shared" if backend.shared else "this process only: other processes are not counted"
            log.info(
                "Rutter rate limit: %d per %gs in %s (%s; %s)",
                max_requests,
                period_s,
                backend.describe(),
                backend.reason,
                where,
            )
        return limiter


def close_shared_limiters() -> None:
    """Close and forget every registered limiter (tests; a process that is about to exit)."""
    with _registry_lock:
        limiters = list(_registry.values())
        _registry.clear()
    for limiter in limiters:
        limiter.close()
