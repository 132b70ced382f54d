"""The connection states: the enum is what the database accepts, and the live and paused sets select
exactly the connections the schedules and the lifecycle mean by them."""

from __future__ import annotations

import psycopg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.connections.states import LIVE, PAUSED, ConnectionState

pytestmark = pytest.mark.postgres


def test_live_and_paused_are_disjoint_and_leave_pending_and_removed_out() -> None:
    assert not LIVE & PAUSED
    assert set(ConnectionState) - LIVE - PAUSED == {ConnectionState.PENDING, ConnectionState.REMOVED}


def test_the_database_accepts_exactly_the_enums_states(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    for state in ConnectionState:
        registry.add(f"c-{state}", "token", state=state)
    with psycopg.connect(warehouse) as conn:
        stored = dict(conn.execute("SELECT connection_id, state FROM rutter.connections").fetchall())
        assert stored == {f"c-{state}": state.value for state in ConnectionState}
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE rutter.connections SET state = 'live' WHERE connection_id = 'c-ready'")


def test_selecting_by_the_sets_finds_their_connections(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    for state in ConnectionState:
        registry.add(f"c-{state}", "token", state=state)
    assert [c.connection_id for c in registry.list(states=LIVE)] == ["c-ready"]
    assert [c.connection_id for c in registry.list(states=PAUSED)] == ["c-disabled", "c-needs_update"]
    assert all(c.live == (c.state in LIVE) for c in registry.list())
