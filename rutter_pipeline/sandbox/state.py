"""The sandbox's world: simulated clock, connections, lifecycle, sync ticks and webhooks.

All of it is mutated from the server's event loop only (requests are handled one at a time), so
it needs no locks; the webhook sender thread only sees the payloads handed to it.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

from rutter_pipeline.sandbox.config import SandboxConfig
from rutter_pipeline.sandbox.connections import Connection
from rutter_pipeline.sandbox.fakedata import STORE_WORDS, uuid_from
from rutter_pipeline.sandbox.lru import WeightedLRU
from rutter_pipeline.sandbox.merchant import Merchant, MerchantProfile
from rutter_pipeline.sandbox.mutations import Mutations
from rutter_pipeline.sandbox.orders import CURRENCIES
from rutter_pipeline.sandbox.platforms import DEMO_PLATFORMS, traits
from rutter_pipeline.sandbox.query import ENDPOINTS, ListQuery, select
from rutter_pipeline.sandbox.records import CREATED, HEAD, TAILS, Backlog, Rec, version_at
from rutter_pipeline.sandbox.timefmt import MINUTE_MS, day_of, to_ms
from rutter_pipeline.sandbox.webhooks import WebhookSender

if TYPE_CHECKING:  # prewarm imports this module
    from rutter_pipeline.sandbox.prewarm import Prewarmer
    from rutter_pipeline.sandbox.readahead import ReadAhead

BIG_MERCHANT_ORDERS_PER_DAY = 3000  # ~1.1 million orders a year
ACTIONS = ("needs_update", "disable", "reconnect", "complete_initial_sync")
# entity -> (webhook type, payload key): {"type": "ORDER", "code": "ORDER_CREATED", ..., "order": {...}}
WEBHOOK_TYPES = {
    "orders": ("ORDER", "order"),
    "products": ("PRODUCT", "product"),
    "customers": ("CUSTOMER", "customer"),
    "transactions": ("TRANSACTION", "transaction"),
}


class SandboxError(ValueError):
    """A control-API request that cannot be honoured (unknown connection, bad action ...)."""


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        now = config.now or datetime.now(UTC)
        self.now_ms = to_ms(now)
        self.cache: WeightedLRU = WeightedLRU(config.cache_records)
        # what lazily generated days made, and those requests left half-done (for the read-ahead)
        self.backlog = Backlog(track=config.read_ahead)
        self.connections: dict[str, Connection] = {}
        self.by_token: dict[str, Connection] = {}
        self.org_id = uuid_from(random.Random(f"org:{config.client_id}"))
        self.mutations = Mutations()
        self.request_stats: Counter[tuple[str, int]] = Counter()
        self.fault_stats: Counter[str] = Counter()
        self.limiter = Limiter(InMemoryBucket([Rate(config.rate_limit_per_10s, Duration.SECOND * 10)]))
        self.started = time.time()
        self.prewarmer: Prewarmer | None = None  # set by build_app when prewarming is on (reported in stats)
        self.read_ahead: ReadAhead | None = None  # set by build_app when read-ahead is on (reported in stats)
        self.last_request_at = 0.0  # time.monotonic() of the last Rutter-surface request (prewarm backs off)
        self.webhooks = WebhookSender(
            url=config.webhook_url,
            secret=config.client_secret,
            retry_base=config.webhook_retry_base_seconds,
            max_retries=config.webhook_max_retries,
            timeout=config.webhook_timeout_seconds,
            duplicate=config.webhook_duplicate,
            shuffle=config.webhook_shuffle,
            seed=config.seed,
        )
        self._next_tick = self._tick_after(self.now_ms)
        for i in range(config.connections):
            self.create_connection(**self._demo_profile(i))

    def close(self) -> None:
        self.webhooks.close()
        self.limiter.close()  # stops pyrate-limiter's leaker thread

    # connections --------------------------------------------------------------------------------
    def _demo_profile(self, i: int) -> dict:
        """The start-up connections: a mix of sizes and platforms with one big merchant in five, or
        (``uniform``, for many-connection runs) all ``orders_per_day``, platforms still rotating."""
        base = self.config.orders_per_day
        if self.config.uniform:
            return {
                "platform": DEMO_PLATFORMS[i % len(DEMO_PLATFORMS)],
                "orders_per_day": base,
                "history_days": self.config.history_days,
                "ready": True,
            }
        sizes = (base, max(2, base // 10), BIG_MERCHANT_ORDERS_PER_DAY, base * 2, max(3, base // 2))
        return {
            "platform": DEMO_PLATFORMS[i % len(DEMO_PLATFORMS)],
            "orders_per_day": sizes[i % len(sizes)],
            "history_days": self.config.history_days,
            "ready": True,
        }

    def create_connection(
        self,
        *,
        platform: str = "SHOPIFY",
        orders_per_day: float = 40,
        history_days: int = 30,
        ready: bool = True,
        initial_sync_minutes: float = 30,
        batches: list | None = None,
        batch_minutes: float = 60,
        seed: int | str | None = None,
    ) -> Connection:
        if orders_per_day < 0 or history_days < 0 or initial_sync_minutes < 0:
            raise SandboxError("orders_per_day, history_days and initial_sync_minutes must not be negative")
        index = len(self.connections)
        rng = random.Random(f"{self.config.seed}:connection:{index}")
        conn_id, token = uuid_from(rng), uuid_from(rng)
        data_seed = f"{self.config.seed}:{index}" if seed is None else f"seed:{seed}"
        currency = traits(platform).currency
        if currency not in CURRENCIES:
            currency = "USD"
        srng = random.Random(data_seed)
        profile = MerchantProfile(
            connection_id=conn_id,
            seed=data_seed,
            platform=platform,
            orders_per_day=float(orders_per_day),
            first_day=day_of(self.now_ms) - int(history_days),
            store_name=f"{srng.choice(STORE_WORDS)} {srng.choice(('Store', 'Boutique', 'Shop', 'Market'))}",
            currency=currency,
        )
        months = [self._batch_months(b) for b in (batches or [])]
        merchant = Merchant(profile, self.cache, self.backlog, clock=lambda: self.now_ms)
        conn = Connection(
            id=conn_id,
            access_token=token,
            org_id=self.org_id,
            merchant=merchant,
            created_ms=self.now_ms,
            initial_sync_ms=int(initial_sync_minutes * MINUTE_MS),
            batches=months,
            batch_ms=int(batch_minutes * MINUTE_MS),
        )
        self.connections[conn_id] = conn
        self.by_token[token] = conn
        if ready:
            self._complete_initial_sync(conn, all_batches=True)
        return conn

    @staticmethod
    def _batch_months(batch: object) -> int:
        months = batch.get("months") if isinstance(batch, dict) else batch
        if not isinstance(months, int) or months <= 0:
            raise SandboxError(f"a batch is {{'months': <positive int>}}, got {batch!r}")
        return months

    def connection(self, connection_id: str) -> Connection:
        try:
            return self.connections[connection_id]
        except KeyError:
            raise SandboxError(f"unknown connection {connection_id!r}") from None

    def action(self, connection_id: str, action: str) -> Connection:
        conn = self.connection(connection_id)
        base = {"type": "CONNECTION", "connection_id": conn.id, "access_token": conn.access_token}
        if action == "needs_update":
            conn.health = "needs_update"
            self.webhooks.enqueue([{**base, "code": "CONNECTION_NEEDS_UPDATE", "update_url": conn.link_url}])
        elif action == "disable":
            conn.health, conn.disabled_reason = "disabled", "SHOP_IS_UNAVAILABLE"
            self.webhooks.enqueue([{**base, "code": "CONNECTION_DISABLED"}])
        elif action == "reconnect":
            conn.health, conn.disabled_reason = "ok", None
            self.webhooks.enqueue(
                [{**base, "code": "CONNECTION_UPDATED", "store_unique_id": f"{conn.id[:8]}.shop.example.com"}]
            )
        elif action == "complete_initial_sync":
            if not conn.ready:
                self._complete_initial_sync(conn, all_batches=False)
        else:
            raise SandboxError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        return conn

    def _complete_initial_sync(self, conn: Connection, *, all_batches: bool) -> None:
        conn.ready_ms = self.now_ms
        conn.last_sync_ms = self.now_ms
        conn.batches_done = len(conn.batches) if all_batches else min(1, len(conn.batches))
        self.webhooks.enqueue(
            [
                {
                    "type": "CONNECTION",
                    "code": "INITIAL_UPDATE",
                    "connection_id": conn.id,
                    "access_token": conn.access_token,
                }
            ]
        )

    def _complete_batch(self, conn: Connection) -> None:
        conn.batches_done += 1
        months = sum(conn.batches[: conn.batches_done])
        self.webhooks.enqueue(
            [
                {
                    "type": "CONNECTION",
                    "code": "HISTORICAL_UPDATE",
                    "connection_id": conn.id,
                    "access_token": conn.access_token,
                    "entities_included_to_time_range": [
                        {"platformEntity": "ORDERS", "xMonthsAgo": months},
                        {"platformEntity": "TRANSACTIONS", "xMonthsAgo": months},
                    ],
                }
            ]
        )

    # clock --------------------------------------------------------------------------------------
    def _tick_after(self, ms: int) -> int:
        step = self.config.sync_interval_minutes * MINUTE_MS
        return (ms // step + 1) * step

    def advance(self, minutes: float) -> int:
        """Move the clock forward, running lifecycle transitions and sync ticks in time order."""
        if minutes < 0:
            raise SandboxError("the clock only moves forward")
        target = self.now_ms + round(minutes * MINUTE_MS)
        while True:
            deadlines = [(d, c) for c in self.connections.values() if (d := c.next_deadline()) is not None]
            next_deadline = min((d for d, _ in deadlines), default=None)
            if next_deadline is not None and next_deadline <= min(target, self._next_tick):
                self.now_ms = max(self.now_ms, next_deadline)
                for d, conn in deadlines:
                    if d == next_deadline:
                        if not conn.ready:
                            self._complete_initial_sync(conn, all_batches=False)
                        else:
                            self._complete_batch(conn)
                continue
            if self._next_tick <= target:
                self.now_ms = self._next_tick
                self._sync_tick(self._next_tick)
                self._next_tick = self._tick_after(self._next_tick)
                continue
            break
        self.now_ms = target
        return self.now_ms

    def _sync_tick(self, tick: int) -> None:
        """Rutter's incremental sync: one data webhook per record created or changed in the tick."""
        start = tick - self.config.sync_interval_minutes * MINUTE_MS
        payloads = []
        for conn in self.connections.values():
            if not conn.ready or conn.health != "ok":
                continue
            conn.last_sync_ms = tick
            if not self.webhooks.url:
                continue
            for entity, (kind, key) in WEBHOOK_TYPES.items():
                lower = conn.transactional_lower(tick) if ENDPOINTS[entity].transactional else None
                for day in range(day_of(start + 1), day_of(tick) + 1):
                    for _, _, rec, v in conn.merchant.event_day(entity, day).span(start + 1, tick):
                        if version_at(rec, tick) != v or (lower is not None and rec[CREATED] < lower):
                            continue
                        code = f"{kind}_CREATED" if rec[CREATED] > start else f"{kind}_UPDATED"
                        doc = self.record_doc(conn, entity, rec, v)
                        payloads.append(
                            {
                                "type": kind,
                                "code": code,
                                "connection_id": conn.id,
                                "access_token": conn.access_token,
                                key: doc,
                            }
                        )
        self.webhooks.enqueue(payloads)

    # data ---------------------------------------------------------------------------------------
    def record_bytes(self, conn: Connection, entity: str, rec: Rec, v: int) -> bytes:
        return self.mutations.serve(conn.id, entity, rec, v)

    def append_records(
        self, parts: list[bytes], conn: Connection, entity: str, selected: list[tuple[Rec, int]]
    ) -> None:
        """Append the selected records' JSON, comma-separated, to ``parts`` for one ``b"".join``.

        A page is a megabyte: joining each record's head and tail straight into the body copies it
        once instead of three times (record, page, body).
        """
        if not selected:
            return
        if self.mutations.active:
            serve = self.mutations.serve
            for rec, v in selected:
                parts += (serve(conn.id, entity, rec, v), b",")
        else:
            for rec, v in selected:
                tails = rec[TAILS]
                parts += (rec[HEAD], tails[v], b",") if tails else (rec[HEAD], b",")
        parts.pop()

    def record_doc(self, conn: Connection, entity: str, rec: Rec, v: int) -> dict:
        return orjson.loads(self.record_bytes(conn, entity, rec, v))

    def ground_truth(self, conn: Connection, q: ListQuery) -> list[dict]:
        lower = conn.transactional_lower(self.now_ms) if q.endpoint.transactional else None
        recs, _ = select(conn.merchant, q, self.now_ms, lower, None)
        return [self.record_doc(conn, q.endpoint.entity, rec, v) for rec, v in recs]
