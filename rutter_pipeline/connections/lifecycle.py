"""The connection lifecycle state machine, driven by webhooks (:func:`apply_event`) or polling (:func:`apply_status`).

States (``rutter.connections.state``): ``pending`` (initial sync running), ``ready``, ``needs_update``
and ``disabled`` (the two *paused* states: schedules skip them), ``removed`` (an operator's decision:
nothing here moves a connection out of it). Every change is one row in ``rutter.connection_events``.
The machine answers with :class:`Decision` s: what the orchestrator should do because of an event.

Rutter's webhooks carry no event id and no timestamp, may arrive twice and out of order (a failed
delivery is retried for about 15 minutes while later ones get through). The rules, and why:

1. Idempotent. Identical bodies are one inbox row already. Applying the same inbox event twice
   changes nothing and yields no new decision (a caller's replay gets the kept ones, rule 8): per
   connection, the machine remembers the last event id it applied, separately for connection
   events and data events (two sensors may read those classes at different paces, each in id order).
   Re-stating a fact (INITIAL_UPDATE when ready, NEEDS_UPDATE when already needs_update, a status
   poll that shows nothing new) is a no-op too.
2. INITIAL_UPDATE (or HISTORICAL_UPDATE, or any data event: Rutter only sends those once the
   initial sync is done) moves ``pending`` to ``ready``: add the partition, backfill the history.
   Arriving after the connection became ready it is a no-op. Arriving while paused it only notes
   that the data is readable (and adds the partition); the history backfill waits for the resume.
3. HISTORICAL_UPDATE on a ready connection: backfill the newly synced older range. While paused,
   the range is remembered and asked for on resume (the gap backfill covers recent days only).
4. CONNECTION_NEEDS_UPDATE / CONNECTION_DISABLED pause a ``pending`` or ``ready`` connection
   (a ``pause`` decision only for a live one, ``states.LIVE``: only it has runs to stop),
   except when stale: a CONNECTION_UPDATED that arrives while the connection is ``ready`` is the
   mark of reordering (the merchant re-authenticated a connection we think healthy, so the
   breakage it repairs is still in flight), and a pause event received within ``reorder_window``
   (Rutter's retry span, 15 minutes) after it is older than it and ignored. Wrongly pausing would
   stall a healthy connection silently until the next CONNECTION_UPDATED, which may never come;
   wrongly staying live makes its runs fail loudly with NEEDS_UPDATE, and the polling sensor
   corrects it. Between the two paused states the newer event wins (no new decision).
5. CONNECTION_UPDATED on a paused connection resumes it: ``ready`` plus "backfill the gap" (and any
   remembered older range); if it was never loaded, ``ready`` plus the history backfill; if its
   initial sync never finished, back to ``pending``. On a live connection it is a no-op (rule 4).
6. A data event (ORDER_*, PRODUCT_*, CUSTOMER_*, TRANSACTION_* created/updated/deleted) on a ready
   connection asks for an incremental sync of that entity; no state change.
7. ``apply_status`` drives the same machine from ``GET /connections/status``: it is the present
   truth, so it is never stale (rule 4 does not apply), and it can undo what a reordered webhook
   got wrong. Newly completed historical batches become "backfill older", with the same
   ``entities_included_to_time_range`` detail a HISTORICAL_UPDATE carries.

8. No decision is lost to a sensor that dies after applying an event but before Dagster stores its
   run requests (issue 19). The state change must commit before the requests exist (the requests
   are computed from it), and Dagster stores a tick's run requests with its cursor, atomically, only
   when the evaluation returns. So a caller that reads the inbox from a cursor passes that cursor as
   ``delivered_through``: the decisions of each event it applies are kept with the state (in the
   same transaction) until a later call's ``delivered_through`` has passed the event; meanwhile a
   replay of the event (the next tick re-reads from the old cursor) hands them out again, with their
   ``event_id``, from which the sensor derives its run keys, so a decision whose runs were already
   stored launches nothing twice.

What the machine remembers beyond the state lives in ``rutter.connections.details['lifecycle']``;
the state, that memory and the history are written through ``connections.registry``.

Who acts on each :class:`DecisionKind` (``defs/lifecycle_requests.py`` translates them into Dagster
requests): the connection lifecycle sensor applies connection events, the poll sensor status bodies,
and the data webhook sensor data events (rules 2 and 6 are wired end to end: its data events move a
pending connection to ready, and it debounces the ``incremental_sync`` decisions into batched runs).
``pause`` cancels the connection's queued runs; every other kind becomes run requests or partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from rutter_pipeline.connections import registry
from rutter_pipeline.connections.inbox import WebhookEvent
from rutter_pipeline.connections.states import LIVE, PAUSED, ConnectionState
from rutter_pipeline.entities import entity_for_webhook
from rutter_pipeline.warehouse.migrations import psycopg_url

log = logging.getLogger(__name__)

REORDER_WINDOW = timedelta(minutes=15)
READY, PENDING = ConnectionState.READY, ConnectionState.PENDING


class DecisionKind(StrEnum):
    """What the orchestrator should do (a no-op is no decision at all)."""

    ADD_PARTITION = "add_partition"
    BACKFILL_HISTORY = "backfill_history"
    BACKFILL_OLDER = "backfill_older"
    PAUSE = "pause"
    RESUME_BACKFILL_GAP = "resume_backfill_gap"
    INCREMENTAL_SYNC = "incremental_sync"


Decided = list[tuple[DecisionKind, dict]]


@dataclass(frozen=True)
class Decision:
    """What the orchestrator should do because of one event."""

    kind: DecisionKind
    connection_id: str
    entity: str | None = None  # for incremental_sync
    detail: dict = field(default_factory=dict)  # e.g. HISTORICAL_UPDATE's entities_included_to_time_range
    event_id: int = 0  # the inbox event that caused it (0 for a status poll): the sensors' run keys
    seq: int = 0  # its place among that event's decisions

    @property
    def key(self) -> tuple[str, int, int]:
        """Identifies the decision across replays (a replayed event hands out the same decisions)."""
        return self.connection_id, self.event_id, self.seq


SignalKind = Literal["initial", "historical", "needs_update", "disabled", "updated", "data"]


@dataclass(frozen=True)
class Signal:
    """One fact about a connection, from a webhook or read off a status body."""

    kind: SignalKind
    received_at: datetime | None = None
    authoritative: bool = False  # a status poll: the present truth, never stale
    entity: str | None = None
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Memory:
    """What the machine remembers per connection besides the state (JSON in ``details['lifecycle']``)."""

    initial_done: bool = False  # Rutter said the data is readable
    history_requested: bool = False  # backfill_history was decided
    last_connection_event: int = 0
    last_data_event: int = 0
    early_update_at: str | None = None  # ISO time of the last CONNECTION_UPDATED that found us ready
    deferred_older: tuple[dict, ...] = ()  # HISTORICAL_UPDATE ranges that arrived while paused
    batches_completed: int = 0  # historical batches a status poll showed completed
    history_months: int = 0  # the furthest xMonthsAgo a HISTORICAL_UPDATE announced so far
    ready_on: str | None = None  # ISO day the initial sync finished (INITIAL_UPDATE received)
    # Decisions of applied events a sensor may not have turned into stored run requests yet (rule 8):
    # {"event", "class", "seq", "kind", "entity", "detail"} each, until the sensor's cursor passes "event".
    undelivered: tuple[dict, ...] = ()

    @classmethod
    def load(cls, state: str, details: dict[str, Any]) -> Memory:
        raw = dict(details.get("lifecycle") or {})
        raw["deferred_older"] = tuple(raw.get("deferred_older") or ())
        raw["undelivered"] = tuple(raw.get("undelivered") or ())
        memory = cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        if state == READY:  # registered ready by hand (connections add): loaded like any other
            memory = replace(memory, initial_done=True, history_requested=True)
        return memory

    def dump(self) -> dict[str, Any]:
        out = asdict(self)
        out["deferred_older"] = list(self.deferred_older)
        out["undelivered"] = list(self.undelivered)
        return out


# -- the machine (pure) ------------------------------------------------------------------------------


def step(
    state: str, memory: Memory, signal: Signal, reorder_window: timedelta = REORDER_WINDOW
) -> tuple[str, Memory, Decided]:
    """Apply one signal: the new state, the new memory, and ``(kind, detail)`` of each decision."""
    if state == ConnectionState.REMOVED:
        return state, memory, []
    kind = signal.kind
    if kind == "data":
        if state == READY:
            return state, memory, [(DecisionKind.INCREMENTAL_SYNC, signal.detail)]
        kind = "initial"  # a data event proves the initial sync is done (rule 2)
    if kind == "historical" and state == READY:
        memory, detail = _announced(memory, signal)
        return state, memory, [(DecisionKind.BACKFILL_OLDER, detail)]
    if kind in ("initial", "historical"):
        return _initial(state, memory, signal)
    if kind == "updated":
        return _updated(state, memory, signal)
    return _pause(state, memory, signal, reorder_window)


def _initial(state: str, memory: Memory, signal: Signal) -> tuple[str, Memory, Decided]:
    if state == PENDING:
        ready_on = signal.received_at.astimezone(UTC).date().isoformat() if signal.received_at else memory.ready_on
        return (
            READY,
            replace(memory, initial_done=True, history_requested=True, ready_on=ready_on),
            [
                (DecisionKind.ADD_PARTITION, {}),
                (DecisionKind.BACKFILL_HISTORY, {}),
            ],
        )
    if state in PAUSED:
        decisions: Decided = [] if memory.initial_done else [(DecisionKind.ADD_PARTITION, {})]
        if signal.kind == "historical" and memory.history_requested:
            memory, detail = _announced(memory, signal)
            memory = replace(memory, deferred_older=(*memory.deferred_older, detail))
        return state, replace(memory, initial_done=True), decisions
    return state, memory, []  # ready: already done


def announced_months(detail: dict) -> int:
    """The furthest ``xMonthsAgo`` of a HISTORICAL_UPDATE's ``entities_included_to_time_range``."""
    ranges = detail.get("entities_included_to_time_range", [])
    return max((int(item.get("xMonthsAgo") or 0) for item in ranges), default=0)


def _announced(memory: Memory, signal: Signal) -> tuple[Memory, dict]:
    """A HISTORICAL_UPDATE's decision detail: the months it announces, and those announced before.

    Rutter's batches extend the synced history backwards; each HISTORICAL_UPDATE says how far back
    it now reaches. Only the months between the previous announcement (or, for the first, the day
    the initial sync finished) and this one are new, so only those are loaded again.
    """
    months = announced_months(signal.detail)
    announced_on = signal.received_at.astimezone(UTC).date().isoformat() if signal.received_at else None
    detail = {
        **signal.detail,
        "previous_months": memory.history_months,
        "ready_on": memory.ready_on,
        "announced_on": announced_on,
    }
    return replace(memory, history_months=max(memory.history_months, months)), detail


def _updated(state: str, memory: Memory, signal: Signal) -> tuple[str, Memory, Decided]:
    if state == READY:
        if signal.authoritative or signal.received_at is None:
            return state, memory, []
        return state, replace(memory, early_update_at=signal.received_at.isoformat()), []
    if state not in PAUSED:
        return state, memory, []  # pending: an API-created connection finished auth; INITIAL_UPDATE follows
    if not memory.initial_done:
        return PENDING, memory, []
    if not memory.history_requested:
        return READY, replace(memory, history_requested=True), [(DecisionKind.BACKFILL_HISTORY, {})]
    decisions: Decided = [(DecisionKind.RESUME_BACKFILL_GAP, {"paused_state": state})]
    decisions += [(DecisionKind.BACKFILL_OLDER, detail) for detail in memory.deferred_older]
    return READY, replace(memory, deferred_older=()), decisions


def _stale(memory: Memory, signal: Signal, reorder_window: timedelta) -> bool:
    """A pause event received within the reorder window after an early CONNECTION_UPDATED (rule 4)."""
    if signal.authoritative or not memory.early_update_at or signal.received_at is None:
        return False
    return signal.received_at <= datetime.fromisoformat(memory.early_update_at) + reorder_window


def _pause(state: str, memory: Memory, signal: Signal, reorder_window: timedelta) -> tuple[str, Memory, Decided]:
    target = ConnectionState(signal.kind)
    if state == target:
        return state, memory, []
    if _stale(memory, signal, reorder_window):
        log.info("ignoring a stale %s: it arrived right after a CONNECTION_UPDATED", target)
        return state, memory, []
    decisions: Decided = [(DecisionKind.PAUSE, {"state": str(target), **signal.detail})] if state in LIVE else []
    return target, memory, decisions


# -- signals from webhooks and status bodies -----------------------------------------------------------


def event_signal(event: WebhookEvent) -> Signal | None:
    """The signal a webhook carries, or None when the lifecycle does not care about its code."""
    code, at, payload = event.code or "", event.received_at, event.payload
    if code == "INITIAL_UPDATE":
        return Signal("initial", at)
    if code == "HISTORICAL_UPDATE":
        ranges = payload.get("entities_included_to_time_range")
        return Signal("historical", at, detail={"entities_included_to_time_range": ranges} if ranges else {})
    if code == "CONNECTION_NEEDS_UPDATE":
        url = payload.get("update_url")
        return Signal("needs_update", at, detail={"update_url": url} if url else {})
    if code == "CONNECTION_DISABLED":
        return Signal("disabled", at)
    if code == "CONNECTION_UPDATED":
        return Signal("updated", at)
    entity = entity_for_webhook(code)
    if entity is not None:
        return Signal("data", at, entity=entity.name, detail={"code": code})
    return None


def status_signals(status: dict[str, Any], memory: Memory, state: str) -> Iterator[Signal]:
    """The signals a ``GET /connections/status`` body (or its ``status`` object) implies."""
    status = status_body(status)
    disabled = status.get("disabled_status") or {}
    if disabled.get("is_disabled"):
        reason = disabled.get("disabled_reason")
        yield Signal("disabled", authoritative=True, detail={"disabled_reason": reason} if reason else {})
    elif (status.get("needs_update_status") or {}).get("needs_update"):
        detail = {"update_url": status["link_url"]} if status.get("link_url") else {}
        yield Signal("needs_update", authoritative=True, detail=detail)
    elif state in PAUSED:
        yield Signal("updated", authoritative=True)
    if status.get("is_ready"):
        yield Signal("initial", authoritative=True)
        completed = completed_batches(status)
        if completed > memory.batches_completed and memory.history_requested:
            yield Signal("historical", authoritative=True, detail=synced_ranges(status, completed))


def status_body(status: dict[str, Any]) -> dict[str, Any]:
    """The ``status`` object, given either it or the whole ``{"connection", "status"}`` body."""
    return status["status"] if isinstance(status.get("status"), dict) else status


def synced_ranges(status: dict[str, Any], completed: int) -> dict[str, Any]:
    """A status body's first ``completed`` batches in HISTORICAL_UPDATE's terms, so both sources read alike.

    ``{"batches_completed": 2, "entities_included_to_time_range": [{"platformEntity": "ORDERS",
    "xMonthsAgo": 3}, ...]}``: batches run newest first, so the months add up.
    """
    batches = ((status.get("historical_sync_status") or {}).get("batches") or [])[:completed]
    months = sum(int(((b or {}).get("config") or {}).get("timeFrameInMonths") or 0) for b in batches)
    entities = sorted({name for b in batches for name in ((b or {}).get("progress_info") or {})})
    detail: dict[str, Any] = {"batches_completed": completed}
    if months and entities:
        detail["entities_included_to_time_range"] = [
            {"platformEntity": name.upper(), "xMonthsAgo": months} for name in entities
        ]
    return detail


def completed_batches(status: dict[str, Any]) -> int:
    """How many historical-sync batches are complete (``num_batches_completed``, else counted)."""
    history = status.get("historical_sync_status") or {}
    if isinstance(history.get("num_batches_completed"), int):
        return history["num_batches_completed"]
    done = 0
    for batch in history.get("batches") or ():
        progress = (batch or {}).get("progress_info") or {}
        if progress and all((p or {}).get("status") == "COMPLETED" for p in progress.values()):
            done += 1
    return done


# -- applying signals to the registry ------------------------------------------------------------------


def apply_event(
    url: str,
    event: WebhookEvent,
    *,
    reorder_window: timedelta = REORDER_WINDOW,
    delivered_through: int | None = None,
) -> list[Decision]:
    """Apply one inbox event in one transaction (state, memory, history); return its decisions."""
    return apply_events(url, [event], reorder_window=reorder_window, delivered_through=delivered_through)


def apply_events(
    url: str,
    events: Iterable[WebhookEvent],
    *,
    reorder_window: timedelta = REORDER_WINDOW,
    delivered_through: int | None = None,
) -> list[Decision]:
    """:func:`apply_event` for each event in order, over one database connection (a transaction each).

    ``delivered_through``: the inbox cursor the caller's last *stored* result reached (rule 8). When
    given, decisions are kept until a call's cursor passes their event, and each event handed in
    also hands out again the kept decisions of its connection's events of its class after that
    cursor, up to it (an earlier call's, whose result was never stored), each once per call. Without
    it, decisions are handed out once and not kept (callers that act on them synchronously).
    """
    decisions: list[Decision] = []
    seen: set[tuple[str, int, int]] = set()
    with psycopg.connect(psycopg_url(url), row_factory=dict_row) as conn:
        for event in events:
            for decision in _apply_event(conn, event, reorder_window, delivered_through):
                if decision.key not in seen:
                    seen.add(decision.key)
                    decisions.append(decision)
    return decisions


def _apply_event(
    conn: psycopg.Connection[Any], event: WebhookEvent, reorder_window: timedelta, delivered_through: int | None
) -> list[Decision]:
    signal = event_signal(event)
    if signal is None or not event.connection_id:
        return []
    counter = "last_data_event" if signal.kind == "data" else "last_connection_event"
    klass = "data" if signal.kind == "data" else "connection"
    with conn.transaction():
        locked = _lock(conn, event.connection_id)
        if locked is None:
            log.warning("%s webhook for unregistered connection %s ignored", event.code, event.connection_id)
            return []
        state, memory = locked
        # Kept decisions of this class past the caller's cursor and not after this event: a replay.
        again = (
            [
                Decision(
                    DecisionKind(d["kind"]),
                    event.connection_id,
                    d.get("entity"),
                    dict(d.get("detail") or {}),
                    d["event"],
                    d["seq"],
                )
                for d in memory.undelivered
                if d["class"] == klass and delivered_through < d["event"] <= event.id
            ]
            if delivered_through is not None
            else []
        )
        if getattr(memory, counter) >= event.id:
            return again  # applied before (rule 1): only what an earlier tick did not deliver
        if klass == "data":
            memory = replace(memory, last_data_event=event.id)
        else:
            memory = replace(memory, last_connection_event=event.id)
        new_state, memory, decided = step(state, memory, signal, reorder_window)
        made = _decisions(event.connection_id, decided, signal.entity, event.id)
        if delivered_through is not None:
            kept = [d for d in memory.undelivered if d["class"] != klass or d["event"] > delivered_through]
            kept += [
                {
                    "event": event.id,
                    "class": klass,
                    "seq": d.seq,
                    "kind": d.kind,
                    "entity": d.entity,
                    "detail": d.detail,
                }
                for d in made
            ]
            memory = replace(memory, undelivered=tuple(kept))
        _save(conn, event.connection_id, state, new_state, memory, f"{event.code} (webhook event {event.id})")
    return again + made


def _status_step(state: str, memory: Memory, status: dict[str, Any]) -> tuple[str, Memory, Decided]:
    decided: Decided = []
    for signal in status_signals(status, memory, state):
        state, memory, made = step(state, memory, signal)
        decided += made
    completed = completed_batches(status_body(status))
    return state, replace(memory, batches_completed=max(memory.batches_completed, completed)), decided


def apply_status(url: str, connection_id: str, status: dict[str, Any]) -> list[Decision]:
    """Apply a ``GET /connections/status`` body (or its ``status`` object) in one transaction."""
    with psycopg.connect(psycopg_url(url), row_factory=dict_row) as conn:
        locked = _lock(conn, connection_id)
        if locked is None:
            log.warning("status of unregistered connection %s ignored", connection_id)
            return []
        before, memory = locked
        state, memory, decided = _status_step(before, memory, status)
        _save(conn, connection_id, before, state, memory, "connection status poll")
    return _decisions(connection_id, decided, None)


def changed_by_status(url: str, statuses: dict[str, dict[str, Any]]) -> list[str]:
    """The connections whose status would change their state, memory or decisions, in one query.

    A poll of 1,000 connections finds most of them as they were; only those that changed are
    applied (each in its own transaction), so an unchanged fleet costs one read, not 1,000 writes.
    """
    with psycopg.connect(psycopg_url(url), row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT connection_id, state, details FROM rutter.connections WHERE connection_id = ANY(%s) "
            "ORDER BY connection_id",
            (list(statuses),),
        ).fetchall()
    changed = []
    for row in rows:
        memory = Memory.load(row["state"], row["details"] or {})
        state, after, decided = _status_step(row["state"], memory, statuses[row["connection_id"]])
        if decided or state != row["state"] or after != memory:
            changed.append(row["connection_id"])
    return changed


def _lock(conn: psycopg.Connection[Any], connection_id: str) -> tuple[str, Memory] | None:
    """The connection's state and memory, its row locked until commit so that appliers serialize."""
    row = conn.execute(
        "SELECT state, details FROM rutter.connections WHERE connection_id = %s FOR UPDATE", (connection_id,)
    ).fetchone()
    if row is None:
        return None
    return row["state"], Memory.load(row["state"], row["details"] or {})


def _save(
    conn: psycopg.Connection[Any], connection_id: str, before: str, after: str, memory: Memory, cause: str
) -> None:
    registry.save_lifecycle(conn, connection_id, memory.dump())
    registry.record_transition(conn, connection_id, before, after, cause)


def _decisions(connection_id: str, decided: Decided, entity: str | None, event_id: int = 0) -> list[Decision]:
    return [
        Decision(
            kind, connection_id, entity if kind == DecisionKind.INCREMENTAL_SYNC else None, dict(detail), event_id, seq
        )
        for seq, (kind, detail) in enumerate(decided)
    ]
