"""The process-wide client-side rate limiter (pyrate-limiter), shared by every thread and client.

Rutter's limit is per organisation (500 requests / 10 s across all connections), so all clients
of one org in this process must draw from one bucket: the registry hands out one limiter per
(base URL, client id, rate). A sliding-window log (pyrate-limiter's ``InMemoryBucket``) guarantees
that no window of ``period_s`` seconds ever holds more than ``max_requests`` starts. Callers block
until a slot frees up rather than fail: waiting is the point, and the time spent is measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

# How long one blocking attempt may wait before the caller gets to check for cancellation.
_SLICE_S = 0.25
# pyrate-limiter dates a request that had to wait by its planned wake-up time, not by when it really
# left (thread scheduling, the lock, the socket write come after), and the server clocks arrivals
# later still. Widening the window by this margin keeps the rate under the limit *as the server
# counts it*; at 10 s it costs 1 % of throughput.
_MARGIN_MS_MIN = 50
_MARGIN_FRACTION = 0.01


class RequestLimiter:
    """A blocking limiter of ``max_requests`` per ``period_s`` seconds."""

    def __init__(self, max_requests: int, period_s: float = 10.0) -> None:
        if max_requests < 1 or period_s <= 0:
            raise ValueError("max_requests must be >= 1 and period_s > 0")
        self.max_requests = max_requests
        self.period_s = period_s
        period_ms = int(Duration.SECOND * period_s)
        margin_ms = max(_MARGIN_MS_MIN, int(period_ms * _MARGIN_FRACTION))
        self._limiter = Limiter(InMemoryBucket([Rate(max_requests, period_ms + margin_ms)]), buffer_ms=5)

    def acquire(self, cancelled: Callable[[], bool] | None = None) -> float:
        """Block until a request may start; return the seconds waited.

        ``cancelled`` is polled between short waits so that a cancelled fetch does not sit out
        a full window; when it returns True the wait stops with ``InterruptedError``.
        """
        started = time.monotonic()
        while not self._limiter.try_acquire("rutter", blocking=True, timeout=_SLICE_S):
            if cancelled is not None and cancelled():
                raise InterruptedError("fetch cancelled while waiting for the rate limiter")
        return time.monotonic() - started

    def __repr__(self) -> str:
        return f"RequestLimiter({self.max_requests} per {self.period_s:g}s)"


_registry: dict[tuple[str, str, int, float], RequestLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(
    base_url: str, client_id: str | None, max_requests: int, period_s: float = 10.0
) -> RequestLimiter:
    """The one limiter of this process for an org (client id) at a base URL and rate."""
    key = (base_url.rstrip("/"), client_id or "", max_requests, float(period_s))
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RequestLimiter(max_requests, period_s)
        return limiter
