"""A simulated Rutter connection: its lifecycle and the connection payloads Rutter returns.

Lifecycle (simulated time): created -> initial sync (reads answer 409 PRODUCT_NOT_READY for
``initial_sync_minutes``; ``force_fetch=true`` on orders/transactions returns the newest part
synced so far) -> ready (INITIAL_UPDATE). With data batches (newest months first), only batch 1's
range of transactional data (orders, transactions) is served after INITIAL_UPDATE; each later batch
completes ``batch_minutes`` later (HISTORICAL_UPDATE) and extends the range; after the last batch
the whole history is served. Customers and products are always served in full, as Rutter's
lookback only applies to transactional objects. Health is separate from sync progress:
``needs_update`` and ``disabled`` block reads (403) until ``reconnect``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rutter_pipeline.sandbox.merchant import Merchant
from rutter_pipeline.sandbox.timefmt import DAY_MS, MINUTE_MS, iso_ms, months_before

STATUS_ENTITIES = ("orders", "transactions", "products", "customers")


@dataclass
class Connection:
    id: str
    access_token: str
    org_id: str
    merchant: Merchant
    created_ms: int
    initial_sync_ms: int
    batches: list[int] = field(default_factory=list)  # months per batch, newest first
    batch_ms: int = 60 * MINUTE_MS
    ready_ms: int | None = None
    batches_done: int = 0
    health: str = "ok"  # ok | needs_update | disabled
    disabled_reason: str | None = None
    last_sync_ms: int | None = None

    @property
    def platform(self) -> str:
        return self.merchant.p.platform

    @property
    def ready(self) -> bool:
        return self.ready_ms is not None

    @property
    def state(self) -> str:
        if self.health != "ok":
            return self.health
        return "ready" if self.ready else "pending"

    @property
    def link_url(self) -> str:
        return f"https://link.rutterapi.com/connection/{self.id}"

    @property
    def history_start_ms(self) -> int:
        return self.merchant.p.first_day * DAY_MS

    # served range ---------------------------------------------------------------------------------
    def batch_lower(self, completed: int) -> int | None:
        """Oldest created_at served once ``completed`` batches are done (None: the whole history)."""
        if not self.batches or completed >= len(self.batches):
            return None
        return max(self.history_start_ms, months_before(self.created_ms, sum(self.batches[:completed])))

    def transactional_lower(self, now: int) -> int | None:
        """Oldest created_at of orders/transactions served right now."""
        if self.ready:
            return self.batch_lower(self.batches_done)
        target = self.batch_lower(1) if self.batches else self.history_start_ms
        target = self.history_start_ms if target is None else target
        progress = min(1.0, max(0.0, (now - self.created_ms) / max(1, self.initial_sync_ms)))
        return self.created_ms - int(progress * (self.created_ms - target))

    def next_deadline(self) -> int | None:
        """The next simulated instant at which this connection's sync state changes by itself."""
        if self.ready_ms is None:  # not ready
            return self.created_ms + self.initial_sync_ms
        if self.batches and self.batches_done < len(self.batches):
            return self.ready_ms + self.batches_done * self.batch_ms
        return None

    # payloads -------------------------------------------------------------------------------------
    def envelope(self) -> dict:
        return {"id": self.id, "orgId": self.org_id, "platform": self.platform}

    def list_item(self) -> dict:
        created = iso_ms(self.created_ms)
        return {
            "id": self.id,
            "access_token": self.access_token,
            "link_url": self.link_url,
            "platform": self.platform,
            "created_at": created,
            "updated_at": iso_ms(self.last_sync_ms or self.ready_ms or self.created_ms),
        }

    def fetch_payload(self, now: int) -> dict:
        p = self.merchant.p
        lower = self.transactional_lower(now)
        return {
            "connection": {
                "id": self.id,
                "store_unique_id": f"{self.id[:8]}.shop.example.com",
                "estimated_completed_at": None if self.ready else iso_ms(self.created_ms + self.initial_sync_ms),
                "last_sync_completed_at": None if self.last_sync_ms is None else iso_ms(self.last_sync_ms),
                "last_sync_started_at": iso_ms(self.last_sync_ms or self.created_ms),
                "oldest_order_date": iso_ms(lower if lower is not None else self.history_start_ms),
                "newest_order_date": iso_ms(now),
                "disabled": self.health == "disabled",
                "link_url": self.link_url,
                "needs_update": self.health == "needs_update",
                "platform": self.platform,
                "initial_orders_synced_count": round(
                    p.orders_per_day * max(0, now - (lower or self.history_start_ms)) / DAY_MS
                ),
                "store_domain": f"{self.id[:8]}.shop.example.com",
                "store_name": p.store_name,
                "created_at": iso_ms(self.created_ms),
            }
        }

    def status_payload(self, now: int) -> dict:
        lower = self.transactional_lower(now)
        oldest = iso_ms(lower if lower is not None else self.history_start_ms)
        total = {
            name: {
                "oldest_entity_date": oldest if name in ("orders", "transactions") else iso_ms(self.history_start_ms),
                "newest_entity_date": iso_ms(now),
                "synced_count": None,
                "ready": self.ready,
            }
            for name in STATUS_ENTITIES
        }
        batches = []
        for i, months in enumerate(self.batches):
            done = self.ready and i < self.batches_done
            running = not done and (i == self.batches_done)
            lo = self.batch_lower(i + 1) or self.history_start_ms
            hi = self.batch_lower(i) or now if i else now
            info = {
                "status": "COMPLETED" if done else ("IN_PROGRESS" if running else "NOT_STARTED"),
                "oldest_batch_entity_date": iso_ms(lo) if done else None,
                "newest_batch_entity_date": iso_ms(hi) if done else None,
            }
            batches.append(
                {
                    "batch_num": i + 1,
                    "progress_info": {"orders": info, "transactions": dict(info)},
                    "config": {
                        "timeFrameInMonths": months,
                        "entities": {
                            "orders": "REQUIRED",
                            "transactions": "REQUIRED",
                            "products": "PREFERRED_BUT_OPTIONAL",
                            "customers": "PREFERRED_BUT_OPTIONAL",
                        },
                    },
                }
            )
        completed = self.ready and (not self.batches or self.batches_done >= len(self.batches))
        return {
            "connection": {"id": self.id, "orgId": self.org_id, "platform": self.platform},
            "status": {
                "last_sync_completed_at": None if self.last_sync_ms is None else iso_ms(self.last_sync_ms),
                "is_ready": self.ready,
                "link_url": self.link_url,
                "platform": self.platform,
                "needs_update_status": {"needs_update": self.health == "needs_update"},
                "disabled_status": {
                    "is_disabled": self.health == "disabled",
                    "disabled_reason": self.disabled_reason if self.health == "disabled" else None,
                },
                "historical_sync_status": {
                    "historical_sync_completed": completed,
                    "total": total,
                    "num_batches_completed": (self.batches_done if self.ready else 0) if self.batches else None,
                    "synced_balance_sheets_count": None,
                    "synced_cash_flows_count": None,
                    "synced_income_statements_count": None,
                    "synced_orders_count": None,
                    "synced_transactions_count": None,
                    "batches": batches,
                },
                "created_at": iso_ms(self.created_ms),
            },
        }

    def control_summary(self, now: int) -> dict:
        p = self.merchant.p
        lower = self.transactional_lower(now)
        return {
            "connection_id": self.id,
            "access_token": self.access_token,
            "platform": self.platform,
            "state": self.state,
            "ready": self.ready,
            "health": self.health,
            "orders_per_day": p.orders_per_day,
            "history_start": iso_ms(self.history_start_ms),
            "served_from": iso_ms(lower if lower is not None else self.history_start_ms),
            "created_at": iso_ms(self.created_ms),
            "batches": self.batches,
            "batches_done": self.batches_done,
            "store_name": p.store_name,
            "currency": p.currency,
            "seed": p.seed,
        }
