"""Record ids: random-looking version-4 UUIDs that hide the day their record was created.

``/orders/{id}`` must find a record without a scan of the whole history, so the first 32 bits of
an id are the creation day XORed with a per-merchant mask and with the id's own last 32 bits; the
id still looks random, and ``day_of`` undoes it. Formatting a UUID costs about as much as
building a small dict, so ids of objects inside a record are derived from the record's id instead.
"""

from __future__ import annotations

import hashlib

_FORMAT = "%08x-%04x-4%03x-%04x-%012x"
BITS96 = (1 << 96) - 1
# Objects inside a record (line items, fulfilments), and an order's transactions (which have no
# by-id endpoint to find them by day), take the order's id with the last four hex digits replaced:
# unique wherever the orders' ids are, for the price of a slice rather than of formatting another
# UUID (several per order).
LINE_SUFFIXES = tuple(f"a{n:03x}" for n in range(1, 17))
FULFILMENT_SUFFIXES = ("f001", "f002")
ORDER_TX_SUFFIXES = {"sale": "b001", "refund": "b002"}  # an order has one sale and at most one refund


class IdCodec:
    __slots__ = ("_mask",)

    def __init__(self, seed: str) -> None:
        self._mask = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big")

    def uuid(self, rest: int, day: int) -> str:
        """The id made of 96 random bits ``rest`` for a record created on ``day``."""
        return _FORMAT % (
            (day ^ self._mask ^ rest) & 0xFFFFFFFF,
            (rest >> 80) & 0xFFFF,
            (rest >> 68) & 0xFFF,
            0x8000 | ((rest >> 48) & 0x3FFF),
            rest & 0xFFFFFFFFFFFF,
        )

    def day_of(self, rec_id: str) -> int | None:
        try:
            return (int(rec_id[:8], 16) ^ self._mask ^ int(rec_id[-12:], 16)) & 0xFFFFFFFF
        except ValueError:
            return None
