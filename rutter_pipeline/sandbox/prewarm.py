"""Background pre-generation: build the connections' history while the server is idle.

Rutter serves reads from its own copy of a merchant's data, filled during the initial sync; the
sandbox's equivalent is generating days, which costs far more than serving them. When enabled
(``SandboxConfig.prewarm``; the standalone server turns it on), an asyncio task in the server's
own event loop generates each ready connection's days (as the JSON they are served as), newest
first, whenever no request has arrived for a short while, so it never competes with a request for
the CPU. It stops at a share of the cache budget so that it never evicts what clients are using.
"""

from __future__ import annotations

import asyncio
import time

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

    def _next(self) -> tuple[str, str, int] | None:
        now = self.sb.now_ms
        for entity in ENTITIES:
            for conn in list(self.sb.connections.values()):
                if not conn.ready:
                    continue
                for day in range(now // DAY_MS, conn.merchant.p.first_day - 1, -1):
                    key = (conn.id, entity, day)
                    if key not in self._done_keys:
                        return key
        return None

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
