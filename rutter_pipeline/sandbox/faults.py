"""Fault injection on the Rutter surface: what a flaky upstream does to a client.

Decided per request, before any work, from a seeded generator (reproducible runs). Kinds: 429
(with or without ``Retry-After``), 500/502/503, a delay, a truncated body (status 200, JSON cut in
the middle), a dropped connection (closed without any response), bursts (the next N requests
fail with 5xx), slow responses (a share held back beyond a client's timeout) and cursor failures
(the next N requests that carry a cursor fail: paging breaks mid-stream). Page-shape faults
(a record repeated across a page boundary, the clock moving between pages) are applied by the list
handler from the same settings. ``/_sandbox/`` is never affected.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from rutter_pipeline.sandbox.config import FaultSettings


@dataclass(frozen=True)
class FaultDecision:
    delay: float = 0.0
    status: int | None = None  # answer with this error status instead of the real response
    retry_after: float | None = None
    truncate: bool = False
    drop: bool = False


NO_FAULT = FaultDecision()


class FaultInjector:
    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(f"faults:{settings.seed}")

    def set(self, values: dict) -> FaultSettings:
        self.settings.update(values)
        if "seed" in values:
            self._rng = random.Random(f"faults:{self.settings.seed}")
        return self.settings

    def clear(self) -> None:
        self.settings = FaultSettings(seed=self.settings.seed)

    def decide(self, path: str, has_cursor: bool = False) -> FaultDecision:
        s = self.settings
        if s.endpoints and not any(path.startswith(prefix) for prefix in s.endpoints):
            return NO_FAULT
        if has_cursor and s.cursor_failures > 0:
            s.cursor_failures -= 1
            self.counts["cursor_5xx"] += 1
            return FaultDecision(s.delay_seconds, status=500)
        if not (
            s.burst_5xx or s.rate_429 or s.rate_5xx or s.rate_truncate or s.rate_drop or s.delay_seconds or s.rate_slow
        ):
            return NO_FAULT
        rng = self._rng
        delay = s.delay_seconds
        if delay:
            self.counts["delay"] += 1
        if s.burst_5xx > 0:
            s.burst_5xx -= 1
            self.counts["burst_5xx"] += 1
            return FaultDecision(delay, status=503)
        roll = rng.random()
        # "slow" comes last: without it the draws (and so a seeded run) are what they were before it
        for rate, kind in (
            (s.rate_drop, "drop"),
            (s.rate_429, "429"),
            (s.rate_5xx, "5xx"),
            (s.rate_truncate, "truncate"),
            (s.rate_slow, "slow"),
        ):
            if roll < rate:
                self.counts[kind] += 1
                if kind == "slow":
                    return FaultDecision(delay + s.slow_seconds)
                if kind == "drop":
                    return FaultDecision(delay, drop=True)
                if kind == "429":
                    return FaultDecision(delay, status=429, retry_after=s.retry_after_seconds)
                if kind == "5xx":
                    return FaultDecision(delay, status=rng.choice((500, 502, 503)))
                return FaultDecision(delay, truncate=True)
            roll -= rate
        return FaultDecision(delay) if delay else NO_FAULT

    def count(self, kind: str) -> None:
        """Tally a fault applied outside ``decide`` (the page-shape faults of the list handler)."""
        self.counts[kind] += 1
