"""A weighted LRU cache for generated days.

Days are generated lazily and are cheap to regenerate (deterministic from the seed), so the cache
bounds memory by the number of records it holds rather than by the number of days: a
million-order merchant and a three-orders-a-day one then cost the same to keep warm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from rutter_pipeline.sandbox.gcpolicy import generating

V = TypeVar("V")


class WeightedLRU(Generic[V]):
    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self.weight = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def get_or_make(self, key: Hashable, make: Callable[[], V], weigh: Callable[[V], int]) -> V:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]
        self.misses += 1
        with generating():  # see gcpolicy
            value = make()
        w = max(1, weigh(value))
        self._items[key] = (value, w)
        self.weight += w
        while self.weight > self.max_weight and len(self._items) > 1:
            _, (_, old_w) = self._items.popitem(last=False)
            self.weight -= old_w
        return value

    def peek(self, key: Hashable) -> V | None:
        found = self._items.get(key)
        return None if found is None else found[0]

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> None:
        for key in [k for k in self._items if predicate(k)]:
            _, w = self._items.pop(key)
            self.weight -= w

    def __len__(self) -> int:
        return len(self._items)
