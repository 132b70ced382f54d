"""Background pre-generation: build the connections' history while the server is idle.

Rutter serves reads from its own copy of a merchant's data, filled during the initial sync; the
sandbox's equivalent is generating days, which costs far more than serving them. When enabled
(``SandboxConfig.prewarm``; the standalone server turns it on), an asyncio task in the server's
own event loop generates the ready connections' days (as the JSON they are served as), newest
day first across all connections (the days a client reads first: yesterday of every store before
last year of one), whenever no request has arrived for a short while, so it never competes with a
request for the CPU. It stops at a share of the cache budget so that it never evicts what clients
are using. Jobs come from one generator, so a step costs the same at 3 connections or 1,000 (no
rescan of what is done).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from rutter_pipeline.sandbox.state import Sandbox
from rutter_pipeline.sandbox.timefmt import DAY_MS

IDLE_SECONDS = 0.2  # no request for this long = idle
CACHE_SHARE = 0.6  # stop once the cache holds this share of its budget
ENTITIES = ("orders", "transactions", "customers", "products")


class Prewarmer:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.days_done = 0
        self._done_keys: set[tuple[str, str, int]] = set()
        self._jobs: Iterator[tuple[str, str, int]] | None = None
        self._pending: tuple[str, str, int] | None = None
        self._seen = (-1, -1, -1)  # (connections, ready ones, now day) the generator was made for

    def _walk(self) -> Iterator[tuple[str, str, int]]:
        now_day = self.sb.now_ms // DAY_MS
        conns = [c for c in self.sb.connections.values() if c.ready]
        oldest = min((c.merchant.p.first_day for c in conns), default=now_day)
        for day in range(now_day, oldest - 1, -1):
            for entity in ENTITIES:
                for conn in conns:
                    key = (conn.id, entity, day)
                    if day >= conn.merchant.p.first_day and key not in self._done_keys:
                        yield key

    def _next(self) -> tuple[str, str, int] | None:
        ready = sum(1 for c in self.sb.connections.values() if c.ready)
        seen = (len(self.sb.connections), ready, self.sb.now_ms // DAY_MS)
        if self._jobs is None or seen != self._seen:  # connections or the day changed: start again from the top
            self._jobs, self._seen, self._pending = self._walk(), seen, None
        if self._pending is None:
            self._pending = next(self._jobs, None)
        return self._pending

    @property
    def cache_full(self) -> bool:
        return self.sb.cache.weight > CACHE_SHARE * self.sb.cache.max_weight

    @property
    def done(self) -> bool:
        return self.cache_full or self._next() is None

    def step(self) -> bool:
        """Generate one (connection, entity, day); False when there is nothing left."""
        job = None if self.cache_full else self._next()
        if job is None:
            return False
        conn_id, entity, day = job
        self.sb.connections[conn_id].merchant.day(entity, day).all()
        self._done_keys.add(job)
        self._pending = None
        self.days_done += 1
        return True

    async def run(self) -> None:
        while True:
            idle_for = time.monotonic() - self.sb.last_request_at
            if idle_for < IDLE_SECONDS:
                await asyncio.sleep(IDLE_SECONDS - idle_for)
                continue
            await asyncio.sleep(0 if self.step() else 0.5)

    def summary(self) -> dict:
        return {"enabled": True, "days_done": self.days_done, "done": self.done, "cache_full": self.cache_full}
