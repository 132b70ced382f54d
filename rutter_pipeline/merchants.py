"""Merchants by name, and whose data stopped arriving (no Dagster).

A connection id is a UUID; the people who look at partitions think in merchants. Rutter says who is
behind a connection in two places: ``GET /connections`` (org-wide, one call) gives every
connection's platform, and ``GET /store`` (per connection, once its initial sync is done) gives the
store's name and address. :func:`refresh` asks both for what the registry does not know yet and
keeps the answers in ``rutter.connections``.

Why the platform was empty before: connections are registered by the webhook receiver from the
first webhook that carries a token (``inbox.store_event``), and Rutter's webhooks carry no platform;
only the status poll (off by default) and the CLI (``connections add --platform``, ``connections
import``) ever wrote one. ``defs/catalog.py`` calls :func:`refresh` at a connection's first run
(``platform_tag_sensor``) and whenever the ``connections`` asset is materialized.

:func:`freshness` tells, per live connection, when its newest order was placed: a merchant whose
orders stopped arriving (the store went quiet, Rutter stopped syncing it, or our loads of it keep
failing) is stale once that is longer ago than the allowed age.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from rutter_pipeline.connections.registry import ConnectionRegistry, Merchant
from rutter_pipeline.connections.states import LIVE, ConnectionState
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.rutter.errors import RutterError
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.migrations import psycopg_url

log = logging.getLogger(__name__)

# GET /store calls one refresh makes at most: a sensor tick that onboards a burst of merchants
# must stay short; the rest are asked on the next refresh.
STORES_PER_REFRESH = 50


@dataclass
class RefreshResult:
    changed: list[str]  # connection ids whose platform or store the registry learned
    asked_stores: int  # GET /store calls made
    unanswered: list[str]  # connections whose /store answered an error (not ready yet, paused, ...)


def refresh(
    client: RutterClient,
    registry: ConnectionRegistry,
    connection_ids: Iterable[str] | None = None,
    *,
    max_stores: int = STORES_PER_REFRESH,
) -> RefreshResult:
    """Fill in the platform and store of the registry's connections (all, or ``connection_ids``).

    Asks Rutter only for what is missing: one ``GET /connections`` when a platform is unknown, and
    ``GET /store`` for live connections without a store name (Rutter answers /store only after the
    initial sync). A Rutter error on one store is logged and leaves that merchant for the next
    refresh; an error of ``GET /connections`` propagates (nothing can be learned without it).
    """
    known = [m for m in registry.merchants(connection_ids=connection_ids) if m.state != ConnectionState.REMOVED]
    platforms: dict[str, str] = {}
    if any(m.platform is None for m in known):
        platforms = {
            item["id"]: item["platform"]
            for item in client.list_connections()
            if isinstance(item, dict) and item.get("id") and item.get("platform")
        }
    updates: dict[str, Merchant] = {
        m.connection_id: Merchant(m.connection_id, platforms.get(m.connection_id), None, None)
        for m in known
        if m.platform is None and m.connection_id in platforms
    }
    unanswered: list[str] = []
    asked = 0
    for m in known:
        if m.store_name is not None or m.state not in LIVE or asked >= max_stores:
            continue
        asked += 1
        try:
            store = client.get_store(registry.access_token(m.connection_id)) or {}
        except (RutterError, LookupError) as exc:  # not ready, paused, removed meanwhile: ask again later
            log.warning("GET /store for connection %s: %s", m.connection_id, exc)
            unanswered.append(m.connection_id)
            continue
        base = updates.get(m.connection_id) or Merchant(m.connection_id, None, None, None)
        updates[m.connection_id] = Merchant(
            m.connection_id, base.platform, _text(store.get("store_name")), _text(store.get("url"))
        )
    changed = registry.set_merchants(list(updates.values()))
    if changed:
        log.info("merchant names learned for %d connection(s)", len(changed))
    return RefreshResult(changed=changed, asked_stores=asked, unanswered=unanswered)


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


@dataclass(frozen=True)
class Freshness:
    """How recent one live connection's data is."""

    connection_id: str
    newest_order_at: datetime | None  # created_at of its newest order in rutter.orders
    live_since: datetime | None  # when it last changed state (became ready): the reference with no orders
    last_loaded_day: str | None  # newest day of orders whose latest load merged (rutter.load_log)
    age: timedelta | None  # since the newest order (or, with none, since it became live)
    stale: bool


def freshness(url: str, stale_after: timedelta, *, now: datetime | None = None) -> list[Freshness]:
    """Every live connection's newest order and whether it is stale, in one statement.

    Stale: the newest order was placed longer than ``stale_after`` ago, or, for a connection with no
    order yet, it has been live that long. Per connection, the newest order is one step down the
    ``(connection_id, created_at)`` index and the last loaded day one range of the load_log key, so
    1,000 connections cost 2,000 index probes.
    """
    now = now or datetime.now(UTC)
    table = layout.entity_table(ORDERS)
    with psycopg.connect(psycopg_url(url), row_factory=dict_row) as conn:
        rows = conn.execute(
            f"""
            SELECT c.connection_id, c.last_event_at AS live_since,
                   (SELECT max(o.created_at) FROM {table} o WHERE o.connection_id = c.connection_id) AS newest,
                   (SELECT max(l.day) FROM rutter.load_log l
                    WHERE l.connection_id = c.connection_id AND l.entity = %(entity)s AND l.status = 'loaded')
                       AS last_day
            FROM rutter.connections c
            WHERE c.state = ANY(%(states)s)
            ORDER BY c.connection_id
            """,
            {"entity": ORDERS.name, "states": sorted(LIVE)},
        ).fetchall()
    out = []
    for row in rows:
        reference = row["newest"] or row["live_since"]
        age = None if reference is None else now - reference
        last_day = row["last_day"].isoformat() if row["last_day"] else None
        stale = age is not None and age > stale_after
        out.append(Freshness(row["connection_id"], row["newest"], row["live_since"], last_day, age, stale))
    return out
