"""Customers: created by their first order, with the schedule of their repeat orders.

A customer-day holds the customers whose first order falls on that day, with the times (and the
random bits of the ids) of their repeat orders in the following ``MAX_UPDATE_DAYS`` days, so that
a customer record can list its orders without generating those later days, and an order-day can
collect its repeat orders from the previous customer-days cheaply.

Who a customer is (names, address, ids) is worked out only when an order or the customer list
needs it (``CustomerDay.identity``): an order-day looks at the schedules of a month of customers but
only needs the identities of those who order on that day. Every identity choice is cut from random
bits drawn with the schedule, so it does not depend on which day asked first.

A customer-day is kept column-wise (one list per attribute, plain tuples inside) rather than as an
object per customer: the cache holds a month of customer-days, tens of thousands of customers, and
objects would all stay tracked by the cyclic GC (see ``records``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import orjson

from rutter_pipeline.sandbox import fakedata as fd
from rutter_pipeline.sandbox.fakedata import weighted_index
from rutter_pipeline.sandbox.ids import BITS96
from rutter_pipeline.sandbox.records import DayData, Rec, tight, versioned
from rutter_pipeline.sandbox.timefmt import DAY_MS, HOUR_MS, iso_ms

if TYPE_CHECKING:
    from rutter_pipeline.sandbox.merchant import Merchant

MAX_UPDATE_DAYS = 30  # the longest delay after which a record can still change (orders, customers ...)
MAX_UPDATE_MS = MAX_UPDATE_DAYS * DAY_MS
REPEAT_WEIGHTS = (0.6, 0.25, 0.1, 0.05)  # P(0..3 repeat orders within MAX_UPDATE_DAYS)
MEAN_REPEATS = sum(i * w for i, w in enumerate(REPEAT_WEIGHTS))
_REPEAT_CUM = fd.cumulative(REPEAT_WEIGHTS)
_NAMES = len(fd.FIRST_NAMES) * len(fd.LAST_NAMES)
IDENTITY_BITS = 232  # 96 bits of customer id + more than log2 of the product of the radixes in identity()

# Identity: (key, platform_id, created_at is null in the customer record, address as an orjson.Fragment,
#            the customer object embedded in orders as JSON up to its "updated_at" value). The rest of
#            who the customer is lives in that JSON only: one copy per customer, for a month of them.
Identity = tuple[str, str, bool, orjson.Fragment, bytes]
KEY: Final = 0  # Final literals, not range(5): a type checker then knows each field's type
PLATFORM_ID: Final = 1
CREATED_NULL: Final = 2
ADDRESS: Final = 3
IN_ORDER: Final = 4


class CustomerDay:
    """The customers whose first order is on ``day``; customer ``i`` is index ``i`` of every column."""

    __slots__ = ("_data", "_identities", "day", "identity_bits", "merchant", "order_bits", "repeats", "times")

    def __init__(
        self,
        merchant: Merchant,
        day: int,
        times: list[tuple[int, ...]],
        order_bits: list[tuple[int, ...]],
        identity_bits: list[int],
    ) -> None:
        self.merchant = merchant
        self.day = day
        self.times = times  # per customer: first order time, then the repeat orders' times
        self.order_bits = order_bits  # per customer and order: the 96 random bits of the order id
        self.identity_bits = identity_bits
        self._identities: list[Identity | None] = [None] * len(times)
        self._data: DayData | None = None
        # order day -> [(time, customer index, k)] for the repeat orders (k >= 1) of these customers
        self.repeats: dict[int, list[tuple[int, int, int]]] = {}
        for i, ts in enumerate(times):
            for k in range(1, len(ts)):
                self.repeats.setdefault(ts[k] // DAY_MS, []).append((ts[k], i, k))

    def __len__(self) -> int:
        return len(self.times)

    def order_id(self, i: int, k: int) -> str:
        """The id of customer ``i``'s ``k``-th order (0 = the first), known without generating that order."""
        return self.merchant.codec.uuid(self.order_bits[i][k], self.times[i][k] // DAY_MS)

    def identity(self, i: int) -> Identity:
        found = self._identities[i]
        if found is None:
            found = self._identities[i] = _identify(self.merchant, self.day, self.times[i][0], self.identity_bits[i])
            self.identity_bits[i] = 0  # drawn for this only
        return found

    @property
    def data(self) -> DayData:
        if self._data is None:
            self._data = DayData([self._record(i) for i in range(len(self.times))])
        return self._data

    def _record(self, i: int) -> Rec:
        who = self.identity(i)
        times = self.times[i]
        static = orjson.loads(who[IN_ORDER] + b'"}')  # id, platform_id, email, names, phone, created_at
        del static["updated_at"]
        if who[CREATED_NULL]:
            static["created_at"] = None
        order_ids = [{"id": self.order_id(i, k)} for k in range(len(times))]
        changing = [{"orders": order_ids[: k + 1], "updated_at": iso_ms(times[k])} for k in range(len(times))]
        return versioned(who[KEY], times[0], times, static, changing, self.merchant.clock())


def make_customer_day(merchant: Merchant, day: int) -> CustomerDay:
    rng = merchant.rng("customers", day)
    start = day * DAY_MS
    count = fd.poisson(rng, merchant.expected_new_customers(day))
    r, bits = rng.random, rng.getrandbits
    times, order_bits, identity_bits = [], [], []
    for first_ms in sorted([start + 1 + int(r() * (DAY_MS - 2)) for _ in range(count)]):
        repeats = weighted_index(rng, _REPEAT_CUM)
        if repeats:
            ts = (
                first_ms,
                *sorted([first_ms + HOUR_MS + int(r() * (MAX_UPDATE_MS - HOUR_MS)) for _ in range(repeats)]),
            )
        else:
            ts = (first_ms,)
        times.append(ts)
        order_bits.append(tuple([bits(96) for _ in ts]))
        identity_bits.append(bits(IDENTITY_BITS))
    return CustomerDay(merchant, day, times, order_bits, identity_bits)


def _identify(merchant: Merchant, day: int, first_ms: int, pool: int) -> Identity:
    """Work out who a customer is from the identity bits drawn with the schedule.

    Hot (once per customer with an order on a generated day), hence ``divmod`` on one integer and
    the address serialized once for all of the customer's orders.
    """
    cid = merchant.codec.uuid(pool & BITS96, day)
    pool >>= 96
    pool, name = divmod(pool, _NAMES)
    pool, tel = divmod(pool, 10_000_000_000)
    pool, city = divmod(pool, len(fd.CITIES))
    pool, street = divmod(pool, len(fd.STREETS) * 1000)
    pool, line2 = divmod(pool, len(fd.ADDRESS2))
    pool, email_n = divmod(pool, 1000)
    pool, rolls = divmod(pool, 100_000_000)  # four independent two-digit rolls
    platform_id = pool % 9_000_000_000
    first, last = fd.FIRST_NAMES[name % len(fd.FIRST_NAMES)], fd.LAST_NAMES[name // len(fd.FIRST_NAMES)]
    t = merchant.t
    null_id = (rolls // 100) % 100 < t.null_customer_id_rate * 100
    phone = None if rolls % 100 < 20 else str(10_000_000_000 + tel)
    c_name, region, country, postal = fd.CITIES[city]
    address = orjson.Fragment(
        tight(
            orjson.dumps(
                {
                    "address1": f"{1 + street % 1000} {fd.STREETS[street // 1000]}",
                    "address2": fd.ADDRESS2[line2],
                    "city": c_name,
                    "country_code": country,
                    "first_name": first,
                    "last_name": last,
                    "postal_code": postal,
                    "region": region,
                    "phone": phone,
                }
            )
        )
    )
    platform = str(1_000_000_000 + platform_id)
    in_order = orjson.dumps(
        {
            "id": None if null_id else cid,
            "platform_id": platform,
            "email": None if (rolls // 10_000) % 100 < 3 else fd.email_for(first, last, email_n),
            "first_name": first,
            "last_name": last,
            "phone": phone,
            "created_at": iso_ms(first_ms),
            "updated_at": "",
        }
    )[:-2]
    return (
        f"~{cid}" if null_id else cid,
        platform,
        rolls // 1_000_000 % 100 < t.null_customer_created_rate * 100,
        address,
        in_order,
    )


def order_customer(who: Identity, updated_iso: str) -> orjson.Fragment:
    """The customer object embedded in an order placed at ``updated_iso`` (the customer's record as of then)."""
    return orjson.Fragment(who[IN_ORDER] + updated_iso.encode() + b'"}')
