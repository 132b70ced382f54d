"""List queries: parameter validation, stateless cursors and window selection.

The sandbox keeps its own table of what each endpoint accepts (from Rutter's 2023-03-14 spec)
instead of importing the project's entity table: it plays Rutter, and sharing the client's
assumptions would hide a mistake in both.

Sorting is stable: by ``(created_at, key)``, or ``(updated_at, key)`` when an ``updated_at``
filter is given; ``/transactions`` honours ``sort`` (``desc`` by default, as Rutter documents).
A cursor is base64 of JSON holding the sort key of the next record and a fingerprint of the
filters, so it needs no server state (adjacent windows can be paged concurrently) and reusing it
with other filters is detected (400).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from rutter_pipeline.sandbox.merchant import Merchant
from rutter_pipeline.sandbox.records import CREATED, KEY, TIMES, Rec, rec_field, version_at
from rutter_pipeline.sandbox.timefmt import DAY_MS

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Endpoint:
    entity: str
    envelope: str
    single_envelope: str | None
    created_filter: bool = True
    force_fetch: bool = False  # force_fetch works before the initial sync (orders, transactions)
    transactional: bool = False  # limited by the lookback / data batches
    sortable: bool = False
    enums: tuple[tuple[str, tuple[str, ...]], ...] = ()  # equality filters on record fields


ENDPOINTS: dict[str, Endpoint] = {
    "orders": Endpoint(
        "orders",
        "orders",
        "order",
        force_fetch=True,
        transactional=True,
        enums=(
            ("payment_status", ("pending", "paid", "refunded", "failed", "unknown")),
            ("fulfillment_status", ("fulfilled", "unfulfilled", "partial", "unknown")),
        ),
    ),
    "products": Endpoint(
        "products", "products", "product", enums=(("status", ("active", "archived", "inactive", "draft")),)
    ),
    "customers": Endpoint("customers", "customers", "customer", created_filter=False),
    "transactions": Endpoint("transactions", "transactions", None, force_fetch=True, transactional=True, sortable=True),
}


class BadRequest(ValueError):
    """A parameter Rutter would reject (400 INVALID_REQUEST)."""


@dataclass(frozen=True)
class ListQuery:
    endpoint: Endpoint
    created_min: int | None = None
    created_max: int | None = None
    updated_min: int | None = None
    updated_max: int | None = None
    desc: bool = False
    limit: int = DEFAULT_LIMIT
    after: tuple[int, str] | None = None  # sort key of the first record to return
    force_fetch: bool = False
    equals: tuple[tuple[str, str], ...] = ()

    @property
    def by_updated(self) -> bool:
        return self.updated_min is not None or self.updated_max is not None

    def fingerprint(self, connection_id: str) -> str:
        basis = orjson.dumps(
            [
                connection_id,
                self.endpoint.entity,
                self.created_min,
                self.created_max,
                self.updated_min,
                self.updated_max,
                self.desc,
                list(self.equals),
            ]
        )
        return hashlib.sha256(basis).hexdigest()[:16]


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer (Unix milliseconds), got {raw!r}") from None


def parse_list_query(endpoint: Endpoint, params: Mapping[str, str], connection_id: str) -> ListQuery:
    if not endpoint.created_filter and ("created_at_min" in params or "created_at_max" in params):
        raise BadRequest(
            f"/{endpoint.entity} does not accept created_at_min/created_at_max; use updated_at_min/updated_at_max"
        )
    created_min, created_max = _int_param(params, "created_at_min"), _int_param(params, "created_at_max")
    updated_min, updated_max = _int_param(params, "updated_at_min"), _int_param(params, "updated_at_max")
    for lo, hi, name in ((created_min, created_max, "created_at"), (updated_min, updated_max, "updated_at")):
        if lo is not None and hi is not None and lo > hi:
            raise BadRequest(f"{name}_min ({lo}) is after {name}_max ({hi})")
    raw_limit = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise BadRequest(f"limit must be an integer, got {raw_limit!r}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    desc = False
    if endpoint.sortable:
        sort = params.get("sort", "desc")
        if sort not in ("asc", "desc"):
            raise BadRequest(f"sort must be 'asc' or 'desc', got {sort!r}")
        desc = sort == "desc"
    force = params.get("force_fetch")
    if force not in (None, "true", "false"):
        raise BadRequest(f"force_fetch must be 'true' or 'false', got {force!r}")
    equals = []
    for name, allowed in endpoint.enums:
        value = params.get(name)
        if value is not None:
            if value not in allowed:
                raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
            equals.append((name, value))
    query = ListQuery(
        endpoint, created_min, created_max, updated_min, updated_max, desc, limit, None, force == "true", tuple(equals)
    )
    cursor = params.get("cursor")
    if cursor:
        after = decode_cursor(cursor, query.fingerprint(connection_id))
        query = ListQuery(
            endpoint,
            created_min,
            created_max,
            updated_min,
            updated_max,
            desc,
            limit,
            after,
            force == "true",
            tuple(equals),
        )
    return query


def encode_cursor(key: tuple[int, str], fingerprint: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"t": key[0], "k": key[1], "f": fingerprint})).decode()


def decode_cursor(cursor: str, fingerprint: str) -> tuple[int, str]:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
        key = (int(doc["t"]), str(doc["k"]))
        fp = doc["f"]
    except Exception:
        raise BadRequest("cursor is not a cursor this API returned") from None
    if fp != fingerprint:
        raise BadRequest("cursor was issued for different filters; restart paging without a cursor")
    return key


Selected = list[tuple[Rec, int]]


def select(
    merchant: Merchant, q: ListQuery, now: int, lower: int | None, limit: int | None
) -> tuple[Selected, tuple[int, str] | None]:
    """The records of one page (or all of them when ``limit`` is None) and the sort key of the next.

    ``lower`` is the oldest ``created_at`` the connection serves for this entity (lookback, data
    batches, an initial sync in progress); None means everything generated.
    """
    first = merchant.p.first_day * DAY_MS
    out: Selected = []
    want = None if limit is None else limit + 1
    equals = q.equals
    after = q.after
    if q.by_updated:
        lo = max(first, q.updated_min if q.updated_min is not None else first)
        hi = min(now, q.updated_max if q.updated_max is not None else now)
        cmin = q.created_min if q.created_min is not None else first
        cmin = max(cmin, lower) if lower is not None else cmin
        cmax = q.created_max if q.created_max is not None else now
        if after is not None:
            lo, hi = (max(lo, after[0]), hi) if not q.desc else (lo, min(hi, after[0]))
        days = range(lo // DAY_MS, hi // DAY_MS + 1)
        for day in reversed(days) if q.desc else days:
            span = merchant.event_day(q.endpoint.entity, day).span(lo, hi)
            for t, key, rec, v in reversed(span) if q.desc else span:
                if after is not None and ((t, key) > after if q.desc else (t, key) < after):
                    continue
                if version_at(rec, now) != v or not cmin <= rec[CREATED] <= cmax:
                    continue
                if equals and not _matches(rec, v, equals):
                    continue
                out.append((rec, v))
                if want is not None and len(out) == want:
                    nxt = out.pop()
                    return out, (nxt[0][TIMES][nxt[1]], nxt[0][KEY])
        return out, None
    lo = max(first, q.created_min if q.created_min is not None else first)
    if lower is not None:
        lo = max(lo, lower)
    hi = min(now, q.created_max if q.created_max is not None else now)
    if after is not None:
        lo, hi = (max(lo, after[0]), hi) if not q.desc else (lo, min(hi, after[0]))
    days = range(lo // DAY_MS, hi // DAY_MS + 1)
    for day in reversed(days) if q.desc else days:
        data = merchant.day(q.endpoint.entity, day)
        i, j = data.bounds(lo, hi, after, q.desc)
        if want is not None:  # generate what this page needs at once (days may be generated lazily)
            data.ensure(j if q.desc else min(j, i + want - len(out)))
        for idx in range(j - 1, i - 1, -1) if q.desc else range(i, j):
            rec = data.at(idx)
            v = version_at(rec, now)
            if equals and not _matches(rec, v, equals):
                continue
            out.append((rec, v))
            if want is not None and len(out) == want:
                nxt = out.pop()
                return out, (nxt[0][CREATED], nxt[0][KEY])
    return out, None


def _matches(rec: Rec, v: int, equals: tuple[tuple[str, str], ...]) -> bool:
    return all(rec_field(rec, v, name) == value for name, value in equals)
