"""Counters of what a client did, readable after a fetch (assets report them as metadata).

The client runs fragments on several threads, so every update takes a lock; the counters are
cheap compared with an HTTP round trip.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientStats:
    """Totals since the client was created (or since ``reset``).

    ``requests`` counts HTTP attempts (including retried ones), ``retries`` the attempts that were
    repeated, ``throttled`` the 429 answers, ``errors`` every failed attempt by error class name,
    ``limiter_wait_s`` the time spent blocked on the client-side rate limiter.
    """

    requests: int = 0
    pages: int = 0
    records: int = 0
    records_skipped: int = 0
    retries: int = 0
    throttled: int = 0
    bytes_received: int = 0
    limiter_wait_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        """Add to several counters at once, atomically (``stats.add(pages=1, records=500)``)."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def add_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent plain-dict copy, JSON-friendly, for metadata and logs."""
        with self._lock:
            return {
                "requests": self.requests,
                "pages": self.pages,
                "records": self.records,
                "records_skipped": self.records_skipped,
                "retries": self.retries,
                "throttled": self.throttled,
                "bytes_received": self.bytes_received,
                "limiter_wait_s": round(self.limiter_wait_s, 3),
                "errors": dict(self.errors),
            }

    def reset(self) -> None:
        with self._lock:
            self.requests = self.pages = self.records = self.records_skipped = 0
            self.retries = self.throttled = self.bytes_received = 0
            self.limiter_wait_s = 0.0
            self.errors.clear()
