"""Schema-change injection: make Rutter "change" for the records of one (connection, entity, day).

Validation has to stop a changed schema at the door, so the sandbox can serve, for the records
created on one UTC day: a required field removed (``drop_field``), a field of another JSON type
(``retype_field``, e.g. ``total_price`` as a string), an unknown new field (``add_field``), or a
few malformed records (``corrupt_records``: a status outside its enum, or a required field null),
or a few records with a NUL character (U+0000) appended to a text field (``nul_text``: what a
platform's odd product title does to a warehouse whose text types cannot hold one), or one
field of chosen records set to a given JSON value (``set_field``: a wrong type, a null, an odd
string, an id that looks like SQL, an order with thousands of line items; a path may index into
arrays, ``line_items.0.quantity``).
Mutations apply wherever a record is served (lists, by-id reads, webhooks, ground truth), so
ground truth always equals what the API actually returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from rutter_pipeline.sandbox.records import CREATED, KEY, Rec, rec_bytes, tight
from rutter_pipeline.sandbox.timefmt import DAY_MS

KINDS = ("drop_field", "retype_field", "add_field", "corrupt_records", "nul_text", "set_field")
DEFAULT_NEW_FIELD = "sandbox_new_field"
# what "corrupt" means per entity when no field is named: an enum violation where there is an enum
CORRUPTIONS: dict[str, tuple[str, object]] = {
    "orders": ("status", "sandbox_corrupt"),
    "transactions": ("status", "sandbox_corrupt"),
    "products": ("name", None),
    "customers": ("orders", None),
}


@dataclass(frozen=True)
class Mutation:
    kind: str
    field: str
    keys: frozenset[str] | None = None  # corrupt_records, nul_text, set_field: the records affected
    value: object = None  # set_field: the JSON value written

    def apply(self, entity: str, doc: dict, key: str) -> dict:
        if self.kind == "corrupt_records":
            if self.keys is not None and key not in self.keys:
                return doc
            default_field, bad_value = CORRUPTIONS[entity]
            value = bad_value if self.field == default_field else None
            _set(doc, self.field, value)
        elif self.kind == "nul_text":
            if self.keys is not None and key not in self.keys:
                return doc
            _, value = _get(doc, self.field)
            _set(doc, self.field, f"{value if isinstance(value, str) else ''}\x00")
        elif self.kind == "set_field":
            if self.keys is None or key in self.keys:
                _set(doc, self.field, self.value)
        elif self.kind == "drop_field":
            _pop(doc, self.field)
        elif self.kind == "retype_field":
            found, value = _get(doc, self.field)
            if found:
                _set(doc, self.field, retype(value))
        elif self.kind == "add_field":
            _set(doc, self.field, "added by the sandbox")
        return doc

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "field": self.field,
            "record_keys": sorted(self.keys) if self.keys is not None else None,
        }


def retype(value: object) -> object:
    """The same information as another JSON type (number -> string, string -> number, ...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return len(value)
    if value is None:
        return 0
    return orjson.dumps(value).decode()


def _walk(doc: dict, path: str) -> tuple[dict | None, str]:
    *parents, last = path.split(".")
    node: object = doc
    for part in parents:
        if isinstance(node, list) and part.isdigit():  # an array element: line_items.0.quantity
            node = node[int(part)] if int(part) < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def _get(doc: dict, path: str) -> tuple[bool, object]:
    node, last = _walk(doc, path)
    return (node is not None and last in node), (node or {}).get(last)


def _set(doc: dict, path: str, value: object) -> None:
    node, last = _walk(doc, path)
    if node is not None:
        node[last] = value


def _pop(doc: dict, path: str) -> None:
    node, last = _walk(doc, path)
    if node is not None:
        node.pop(last, None)


class Mutations:
    def __init__(self) -> None:
        self._by_day: dict[tuple[str, str, int], list[Mutation]] = {}
        # mutated versions already serialized: (slot, record key, version) -> bytes
        self._memo: dict[tuple[tuple[str, str, int], str, int], bytes] = {}

    def add(
        self,
        connection_id: str,
        entity: str,
        day: int,
        kind: str,
        field: str | None,
        count: int | None,
        day_keys: list[str],
        value: object = None,
        index: int = 0,
    ) -> dict:
        if kind not in KINDS:
            raise ValueError(f"unknown mutation kind {kind!r}; known: {', '.join(KINDS)}")
        if entity not in CORRUPTIONS:
            raise ValueError(f"unknown entity {entity!r}")
        keys = None
        if kind == "set_field":  # the value is not echoed back: 5,000 line items would make the answer huge
            if not field:
                raise ValueError("set_field needs a field")
            if not 0 <= index < len(day_keys):
                raise ValueError(f"index {index} is outside the day's {len(day_keys)} records")
            keys = frozenset(day_keys[index : index + max(1, count or 1)])
        elif kind == "corrupt_records":
            field = field or CORRUPTIONS[entity][0]
            keys = frozenset(day_keys[: max(1, count or 1)])
        elif kind == "nul_text":
            if not field:
                raise ValueError("nul_text needs a field (a text field such as a title)")
            keys = frozenset(day_keys[: max(1, count or 1)])
        elif kind == "add_field":
            field = field or DEFAULT_NEW_FIELD
        elif not field:
            raise ValueError(f"{kind} needs a field")
        mutation = Mutation(kind, field, keys, value)
        slot = (connection_id, entity, day)
        self._by_day.setdefault(slot, []).append(mutation)
        self._forget(slot)
        return {
            "connection_id": connection_id,
            "entity": entity,
            "day": day,
            **mutation.describe(),
            "records_in_day": len(day_keys),
        }

    def clear(self, connection_id: str | None = None) -> None:
        for slot in [s for s in self._by_day if connection_id is None or s[0] == connection_id]:
            del self._by_day[slot]
            self._forget(slot)

    def _forget(self, slot: tuple[str, str, int]) -> None:
        for key in [k for k in self._memo if k[0] == slot]:
            del self._memo[key]

    @property
    def active(self) -> bool:
        """Whether any record is currently served differently from how it was generated."""
        return bool(self._by_day)

    def serve(self, connection_id: str, entity: str, rec: Rec, v: int) -> bytes:
        """The JSON of version ``v`` of ``rec`` as served: mutated when its day has mutations."""
        if not self._by_day:
            return rec_bytes(rec, v)
        slot = (connection_id, entity, rec[CREATED] // DAY_MS)
        mutations = self._by_day.get(slot)
        if not mutations:
            return rec_bytes(rec, v)
        memo_key = (slot, rec[KEY], v)
        data = self._memo.get(memo_key)
        if data is None:
            doc = orjson.loads(rec_bytes(rec, v))  # a fresh parse: the mutations change it in place
            for m in mutations:
                doc = m.apply(entity, doc, rec[KEY])
            data = self._memo[memo_key] = tight(orjson.dumps(doc))
        return data

    def listing(self) -> list[dict]:
        return [
            {"connection_id": c, "entity": e, "day": d, **m.describe()}
            for (c, e, d), ms in self._by_day.items()
            for m in ms
        ]
