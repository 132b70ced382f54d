"""One merchant's data, generated lazily per UTC day and deterministically from a seed.

Nothing is generated up front: asking for a day builds it (and the few days it depends on) and
keeps it in a shared weighted LRU, so a merchant with a million orders a year starts at once and
memory stays flat. The same seed always gives the same records, byte for byte, whatever order
the days and pages are asked for in.

How days depend on each other (all bounded by ``MAX_UPDATE_DAYS``, the longest delay after which a
record can still change):
- customers are created by their first order (``customers``): a customer-day holds the customers
  created that day with the schedule of their repeat orders;
- an order-day (``orders``) gathers that day's first orders, the repeat orders scheduled on it by
  the previous customer-days, and guest checkouts, and generates them page by page on demand;
- a transaction-day (``transactions``) collects the transactions created that day by the
  order-days that can have produced them, plus payouts and fees;
- products are created over time (``products``); an order only references products created
  before its day.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from rutter_pipeline.sandbox.customers import MAX_UPDATE_DAYS, MEAN_REPEATS, CustomerDay, make_customer_day
from rutter_pipeline.sandbox.gcpolicy import generating
from rutter_pipeline.sandbox.ids import IdCodec
from rutter_pipeline.sandbox.lru import WeightedLRU
from rutter_pipeline.sandbox.orders import CURRENCIES, OrderDay, make_order_day
from rutter_pipeline.sandbox.platforms import PlatformTraits, traits
from rutter_pipeline.sandbox.products import VariantRef, make_product_day
from rutter_pipeline.sandbox.records import KEY, TIMES, Backlog, DayData, EventDay, Rec
from rutter_pipeline.sandbox.timefmt import DAY_MS
from rutter_pipeline.sandbox.transactions import make_transaction_day

ENTITY_NAMES = ("orders", "products", "customers", "transactions")
_EMPTY = DayData([])


def _before_everything() -> int:
    return -1


@dataclass(frozen=True)
class MerchantProfile:
    connection_id: str
    seed: str
    platform: str
    orders_per_day: float
    first_day: int
    store_name: str
    currency: str


class Catalog:
    """A merchant's variants in creation order; ``lengths[i]``: how many exist after day ``first_day + i``."""

    def __init__(self) -> None:
        self.variants: list[VariantRef] = []
        self.lengths: list[int] = []


class Merchant:
    """The generated world of one connection. Single-threaded: used from the server's event loop."""

    def __init__(
        self,
        profile: MerchantProfile,
        cache: WeightedLRU,
        backlog: Backlog | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.p = profile
        self.t: PlatformTraits = traits(profile.platform)
        self.cache = cache
        self.backlog = backlog  # counts what order-days generate, learns of half-done ones (read-ahead)
        # The sandbox's "now" in ms. The clock only moves forward, so versions it has superseded are
        # never served again and generation leaves them out (most of a long history is final).
        self.clock: Callable[[], int] = clock or _before_everything
        self.codec = IdCodec(profile.seed)
        self.decimals = CURRENCIES[profile.currency][0]
        self.domain = f"{profile.connection_id[:8]}.shop.example.com"
        self._new_customer_means: list[float] = []
        mdec, mrate = CURRENCIES[profile.currency]
        # minor units of the merchant currency -> minor units of each order currency
        self.fx = {c: (rate / mrate) * 10**dec / 10**mdec for c, (dec, rate) in CURRENCIES.items()}

    # randomness and ids -------------------------------------------------------------------------
    def rng(self, kind: str, day: int) -> random.Random:
        """The generator of one (kind, day): each day is reproducible on its own."""
        return random.Random(f"{self.p.seed}:{kind}:{day}")

    def new_id(self, rng: random.Random, day: int) -> str:
        return self.codec.uuid(rng.getrandbits(96), day)

    # volumes ------------------------------------------------------------------------------------
    def expected_orders(self, day: int) -> float:
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        season = 1.25 if weekday >= 5 else 0.92
        return self.p.orders_per_day * season * (1 + 0.08 * math.sin(day / 29.0))

    def expected_new_customers(self, day: int) -> float:
        """Mean first orders on ``day``: customer orders minus the repeats expected from earlier customers.

        Keeps the order volume level from the first day of the history on (instead of ramping up over
        ``MAX_UPDATE_DAYS`` while repeat customers accumulate); computed from means, not from
        generated days, so it costs nothing.
        """
        means = self._new_customer_means
        while len(means) <= day - self.p.first_day:
            d = self.p.first_day + len(means)
            repeats = sum(means[-MAX_UPDATE_DAYS:]) * MEAN_REPEATS / MAX_UPDATE_DAYS
            means.append(max(0.0, self.expected_orders(d) * (1 - self.t.guest_rate) - repeats))
        return means[day - self.p.first_day]

    # days ---------------------------------------------------------------------------------------
    def product_day(self, day: int) -> DayData:
        if day < self.p.first_day:
            return _EMPTY
        return self.cache.get_or_make(
            (self.p.connection_id, "products", day), lambda: make_product_day(self, day)[0], len
        )

    def variants_for(self, day: int) -> tuple[list[VariantRef], int]:
        """The catalogue an order of ``day`` may reference: products created before that day.

        The catalogue lives in the shared cache like a day (weighed by its variants), not on the
        merchant: a thousand connections with two years of history each would otherwise hold every
        variant of every store for good. Building it generates the product-days but does not cache
        them (one entry per day of history per connection would push out the days clients read).
        """
        upto = max(self.p.first_day, day - 1)
        catalog = self.cache.get_or_make(
            (self.p.connection_id, "catalog"), Catalog, lambda c: 1 + (upto - self.p.first_day) // 8
        )
        with generating():  # see gcpolicy
            while len(catalog.lengths) <= upto - self.p.first_day:
                d = self.p.first_day + len(catalog.lengths)
                catalog.variants.extend(make_product_day(self, d)[1])
                catalog.lengths.append(len(catalog.variants))
        return catalog.variants, catalog.lengths[upto - self.p.first_day]

    def customer_day(self, day: int) -> CustomerDay:
        if day < self.p.first_day:
            return CustomerDay(self, day, [], [], [])
        return self.cache.get_or_make(
            (self.p.connection_id, "customers", day), lambda: make_customer_day(self, day), lambda c: 1 + len(c) // 4
        )

    def order_day(self, day: int) -> OrderDay:
        if day < self.p.first_day:
            return OrderDay(_EMPTY, {})
        return self.cache.get_or_make(
            (self.p.connection_id, "orders", day),
            lambda: make_order_day(self, day, self.backlog),
            lambda o: 2 * len(o.data),
        )

    def transaction_day(self, day: int) -> DayData:
        if day < self.p.first_day:
            return _EMPTY
        return self.cache.get_or_make(
            (self.p.connection_id, "transactions", day), lambda: make_transaction_day(self, day), len
        )

    def day(self, entity: str, day: int) -> DayData:
        if entity == "orders":
            return self.order_day(day).data
        if entity == "transactions":
            return self.transaction_day(day)
        if entity == "customers":
            return self.customer_day(day).data if day >= self.p.first_day else _EMPTY
        if entity == "products":
            return self.product_day(day)
        raise KeyError(entity)

    def event_day(self, entity: str, day: int) -> EventDay:
        """Every version change of ``entity`` that happened on ``day`` (for ``updated_at`` windows)."""
        if day < self.p.first_day:
            return EventDay([])

        def make() -> EventDay:
            lo, hi = day * DAY_MS, (day + 1) * DAY_MS
            events = []
            for d in range(max(self.p.first_day, day - MAX_UPDATE_DAYS), day + 1):
                for rec in self.day(entity, d).all():
                    times = rec[TIMES]
                    if times[-1] < lo:
                        continue
                    for v, when in enumerate(times):
                        if lo <= when < hi:
                            events.append((when, rec[KEY], rec, v))
            return EventDay(events)

        return self.cache.get_or_make(
            (self.p.connection_id, f"events:{entity}", day), make, lambda e: len(e.events) // 2
        )

    def find(self, entity: str, rec_id: str) -> Rec | None:
        """A record by id (ids carry their creation day), whatever the clock says."""
        day = self.codec.day_of(rec_id)
        if day is None or day < self.p.first_day or day > self.p.first_day + 100 * 366:
            return None
        data = self.day(entity, day)
        try:
            return data.at(data.keys.index(rec_id))
        except ValueError:
            return None

    def store(self) -> dict:
        return {
            "id": self.new_id(random.Random(f"{self.p.seed}:store"), self.p.first_day),
            "store_name": self.p.store_name,
            "url": f"https://{self.domain}",
            "default_currency": self.p.currency,
            "email": f"owner@{self.domain}",
        }
