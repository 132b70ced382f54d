"""``ConnectionRegistry.add_many``: one transaction per file, idempotent, events only for state changes."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry, ConnectionRow, ImportResult, RegistryWriteError
from rutter_pipeline.warehouse.tokens import token_cipher

pytestmark = pytest.mark.postgres

TOKEN = "access-sandbox-5b0e1c44-import-9f2d-token"


def rows_table(url: str) -> list[tuple]:
    """The registry's rows, the token decrypted (the stored ciphertext is opaque)."""
    cipher = token_cipher()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT connection_id, token_ciphertext, platform, state, updated_at, last_event_at "
            "FROM rutter.connections ORDER BY connection_id"
        ).fetchall()
    return [(r[0], cipher.decrypt(r[1]) if r[1] else None, *r[2:]) for r in rows]


def events(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT connection_id, from_state, to_state, cause FROM rutter.connection_events ORDER BY id"
        ).fetchall()


def test_insert_then_reimport_changes_nothing(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    rows = [ConnectionRow("c2", TOKEN, "SHOPIFY"), ConnectionRow("c1", "token-1")]
    assert registry.add_many(rows) == ImportResult(added=["c2", "c1"])
    assert [(c.connection_id, c.platform, c.state, c.access_token) for c in registry.list()] == [
        ("c1", None, "ready", "token-1"),
        ("c2", "SHOPIFY", "ready", TOKEN),
    ]
    assert events(warehouse) == [("c2", None, "ready", "imported"), ("c1", None, "ready", "imported")]

    before = rows_table(warehouse)
    assert registry.add_many(rows, cause="second") == ImportResult(unchanged=["c2", "c1"])
    # an empty platform keeps the known one, as `add` does
    assert registry.add_many([ConnectionRow("c2", TOKEN)]) == ImportResult(unchanged=["c2"])
    assert rows_table(warehouse) == before  # updated_at included
    assert len(events(warehouse)) == 2


def test_changed_token_or_platform_updates_without_an_event(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    registry.add_many([ConnectionRow("c1", TOKEN, "SHOPIFY"), ConnectionRow("c2", "t2"), ConnectionRow("c3", "t3")])
    before = {r[0]: r for r in rows_table(warehouse)}
    result = registry.add_many(
        [ConnectionRow("c1", "rotated", None), ConnectionRow("c2", "t2", "AMAZON"), ConnectionRow("c3", "t3")]
    )
    assert result == ImportResult(updated=["c1", "c2"], unchanged=["c3"])
    after = {r[0]: r for r in rows_table(warehouse)}
    assert after["c1"][1:4] == ("rotated", "SHOPIFY", "ready")
    assert after["c2"][1:4] == ("t2", "AMAZON", "ready")
    assert after["c1"][4] > before["c1"][4] and after["c3"] == before["c3"]
    assert len(events(warehouse)) == 3  # the three inserts only: no state changed


def test_removed_comes_back_ready_and_other_states_stay(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    registry.add("gone", TOKEN, platform="SHOPIFY")
    registry.remove("gone")
    registry.add("stuck", "t-stuck")
    registry.set_state("stuck", "needs_update", "CONNECTION_NEEDS_UPDATE")
    result = registry.add_many([ConnectionRow("gone", TOKEN), ConnectionRow("stuck", "t-stuck")])
    assert result == ImportResult(updated=["gone"], unchanged=["stuck"])
    gone = registry.get("gone")
    assert (gone.state, gone.access_token, gone.platform) == ("ready", TOKEN, "SHOPIFY")
    assert [(h["from_state"], h["to_state"], h["cause"]) for h in registry.history("gone")] == [
        (None, "ready", "added"),
        ("ready", "removed", "removed"),
        ("removed", "ready", "imported"),
    ]
    # a Rutter-driven state is not undone by re-importing the same token
    assert registry.get("stuck").state == "needs_update"


def test_a_thousand_rows_in_one_call(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    rows = [ConnectionRow(f"conn-{i:04d}", f"token-{i}", "SHOPIFY") for i in range(1000)]
    registry.add_many(rows[:10])
    started = time.perf_counter()
    result = registry.add_many(rows)
    elapsed = time.perf_counter() - started
    assert (len(result.added), len(result.updated), len(result.unchanged)) == (990, 0, 10)
    assert result.added == [r.connection_id for r in rows[10:]]
    assert elapsed < 1.0, f"1,000 rows took {elapsed:.2f} s"
    assert len(registry.list(["ready"])) == 1000 and len(events(warehouse)) == 1000
    again = registry.add_many(rows)
    assert len(again.unchanged) == 1000 and len(events(warehouse)) == 1000


def test_dry_run_counts_and_writes_nothing(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    registry.add_many([ConnectionRow("c1", "t1")])
    before = (rows_table(warehouse), events(warehouse))
    result = registry.add_many([ConnectionRow("c1", "t1-new"), ConnectionRow("c2", "t2")], dry_run=True)
    assert result == ImportResult(added=["c2"], updated=["c1"])
    assert (rows_table(warehouse), events(warehouse)) == before


def test_bad_input_is_refused_whole_and_tokens_never_show(warehouse: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry = ConnectionRegistry(warehouse)
    texts = [repr(ConnectionRow("c1", TOKEN)), repr(registry.add_many([ConnectionRow("c1", TOKEN)]))]
    with pytest.raises(ValueError, match="more than once: c2") as dup:
        registry.add_many([ConnectionRow("c2", TOKEN), ConnectionRow("c2", TOKEN)])
    with pytest.raises(ValueError, match="without an access token: c3") as empty:
        registry.add_many([ConnectionRow("c3", "")])
    texts += [str(dup.value), str(empty.value), caplog.text]
    assert "c1" in texts[0] and "imported 1 connections" in caplog.text
    assert all(TOKEN not in t for t in texts)
    assert [r[0] for r in rows_table(warehouse)] == ["c1"]


def test_a_failed_write_keeps_the_token_out_of_the_error(warehouse: str) -> None:
    """PostgreSQL's DETAIL of a violated constraint quotes the whole row, token included."""
    with psycopg.connect(warehouse) as conn:
        conn.execute("ALTER TABLE rutter.connections ADD CONSTRAINT no_bad CHECK (platform <> 'BAD')")
    registry = ConnectionRegistry(warehouse)
    with pytest.raises(RegistryWriteError, match="violates check constraint") as raised:
        registry.add_many([ConnectionRow("c1", "fine"), ConnectionRow("c2", TOKEN, "BAD")])
    assert TOKEN not in str(raised.value) and raised.value.__cause__ is None and raised.value.__suppress_context__
    assert rows_table(warehouse) == [] and events(warehouse) == []
