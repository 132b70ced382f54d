"""Access tokens at rest: encrypted on every write path, clear-text rows of an old warehouse encrypted
by the upgrade, a dump reveals none, a key rotation re-encrypts them all, and a missing key stops
the pipeline with a clear error instead of storing clear text."""

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from yoyo import get_backend, read_migrations

from rutter_pipeline.connections import inbox
from rutter_pipeline.connections.registry import ConnectionRegistry, ConnectionRow
from rutter_pipeline.warehouse.migrations import MIGRATIONS_DIR, migrate, yoyo_url
from rutter_pipeline.warehouse.tokens import TokenCipher, TokenKeyError, TokenKeyMissing, token_cipher, token_keys
from rutter_pipeline_tests.fixtures.cli import BIN

pytestmark = pytest.mark.postgres

TOKENS = {f"conn-{i}": f"access-sandbox-{i}-5f1e0c1d-9a7b-4c55-b7a2-{i:012d}" for i in range(5)}


def dump_text(url: str) -> str:
    """Every row of every table of the database (all schemas, yoyo's too), as text: a dump's content."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        ).fetchall()
        assert len(tables) > 10
        return "\n".join(r[0] for (t,) in tables for r in conn.execute(f"SELECT x::text FROM {t} x"))


def pg_dump(url: str) -> str:
    """``pg_dump`` of the database, when a client as new as the server is installed; else ''."""
    with psycopg.connect(url) as conn:
        server = conn.info.server_version // 10000
    try:
        version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    if int(version.split()[-1].split(".")[0]) < server:
        return ""
    return subprocess.run(["pg_dump", "--dbname", url], capture_output=True, text=True, check=True).stdout


def assert_no_token(text: str) -> None:
    leaked = [cid for cid, token in TOKENS.items() if token in text]
    assert leaked == [], f"access tokens of {leaked} found in the dump"


def register_every_way(url: str) -> None:
    """Tokens through each write path: add, add_many (import), add_pending (poll), a webhook's token."""
    registry = ConnectionRegistry(url)
    registry.add("conn-0", TOKENS["conn-0"], platform="SHOPIFY")
    registry.add_many([ConnectionRow("conn-1", TOKENS["conn-1"]), ConnectionRow("conn-2", TOKENS["conn-2"])])
    registry.add_pending([ConnectionRow("conn-3", TOKENS["conn-3"], "AMAZON")])
    with psycopg.connect(url) as conn:
        stored = inbox.store_event(
            conn,
            "f" * 64,
            event_type="CONNECTION",
            code="INITIAL_UPDATE",
            connection_id="conn-4",
            payload={"type": "CONNECTION", "code": "INITIAL_UPDATE", "connection_id": "conn-4"},
            access_token=TOKENS["conn-4"],
        )
    assert stored.registered


def test_every_write_path_stores_ciphertext_and_reads_the_token(pg_url: str) -> None:
    migrate(pg_url)
    register_every_way(pg_url)
    registry = ConnectionRegistry(pg_url)
    assert {c.connection_id: c.access_token for c in registry.list()} == TOKENS
    assert_no_token(dump_text(pg_url))
    assert_no_token(pg_dump(pg_url))
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT access_token, token_ciphertext FROM rutter.connections").fetchall()
        assert all(clear is None and cipher for clear, cipher in rows)
        # The table itself refuses clear text, whoever writes it (a script, an old version of this code).
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO rutter.connections (connection_id, access_token) VALUES ('x', 'clear')")


def test_repeated_tokens_keep_their_ciphertext(pg_url: str) -> None:
    """A re-import or a repeated webhook token changes nothing: the stored ciphertext is reused."""
    migrate(pg_url)
    register_every_way(pg_url)

    def table() -> list[tuple]:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(
                "SELECT connection_id, token_ciphertext, updated_at FROM rutter.connections ORDER BY 1"
            ).fetchall()

    before = table()
    result = ConnectionRegistry(pg_url).add_many([ConnectionRow(c, t) for c, t in TOKENS.items()])
    assert sorted(result.unchanged) == sorted(TOKENS) and table() == before


def test_upgrade_encrypts_clear_text_rows_of_an_old_warehouse(pg_url: str) -> None:
    backend = get_backend(yoyo_url(pg_url))
    try:
        older = read_migrations(str(MIGRATIONS_DIR)).filter(lambda m: m.id < "0008")
        with backend.lock():
            backend.apply_migrations(backend.to_apply(older))
    finally:
        backend.connection.close()
    with psycopg.connect(pg_url) as conn:  # what the code before 0008 stored
        conn.execute(
            "INSERT INTO rutter.connections (connection_id, access_token, platform) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])",
            (list(TOKENS), list(TOKENS.values()), ["SHOPIFY"] * len(TOKENS)),
        )
    assert "0008_token_ciphertext" in migrate(pg_url)
    assert_no_token(dump_text(pg_url))
    assert {c.connection_id: c.access_token for c in ConnectionRegistry(pg_url).list()} == TOKENS
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM rutter.connections WHERE access_token IS NOT NULL").fetchone() == (0,)
        # the constraint holds for every row now, so it can be validated
        conn.execute("ALTER TABLE rutter.connections VALIDATE CONSTRAINT connections_no_clear_token")


def test_rotate_key_reencrypts_every_token_and_the_old_key_can_go(pg_url: str, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    migrate(pg_url)
    ConnectionRegistry(pg_url, TokenCipher([old])).add_many([ConnectionRow(c, t) for c, t in TOKENS.items()])
    with psycopg.connect(pg_url) as conn:
        before = dict(conn.execute("SELECT connection_id, token_ciphertext FROM rutter.connections").fetchall())

    # The command as an operator runs it: the new key first, the old one still there.
    env = {
        **os.environ,
        "RUTTER_TOKEN_KEY": f"{new},{old}",
        "WAREHOUSE_URL": pg_url,
        "DAGSTER_PG_URL": pg_url,
        "RUTTER_PIPELINE_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [str(BIN / "rutter-pipeline"), "connections", "rotate-key"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"re-encrypted {len(TOKENS)} access tokens" in done.stdout
    assert_no_token(done.stdout + done.stderr)

    with psycopg.connect(pg_url) as conn:
        after = dict(conn.execute("SELECT connection_id, token_ciphertext FROM rutter.connections").fetchall())
    assert after.keys() == before.keys() and all(after[c] != before[c] for c in before)
    only_new = ConnectionRegistry(pg_url, TokenCipher([new]))
    assert {c.connection_id: c.access_token for c in only_new.list()} == TOKENS
    with pytest.raises(TokenKeyError, match="does not decrypt") as failed:
        ConnectionRegistry(pg_url, TokenCipher([old])).access_token("conn-1")
    assert TOKENS["conn-1"] not in str(failed.value)


def test_without_a_key_only_the_embedded_warehouse_has_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A warehouse of your own and no RUTTER_TOKEN_KEY: refused, with what to do.
    with pytest.raises(TokenKeyMissing, match=r"RUTTER_TOKEN_KEY is not set.*connections new-key"):
        token_keys({"WAREHOUSE_URL": "postgresql://db.example/warehouse"})
    # The embedded default: a key generated once in the state folder, private to its owner, reused.
    monkeypatch.setenv("RUTTER_PIPELINE_STATE_DIR", str(tmp_path / "state"))
    first = token_keys({})
    key_file = tmp_path / "state" / "token.key"
    assert first == [key_file.read_text().strip()] and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert token_keys({}) == first
    # the stack's processes find it by name, whatever their WAREHOUSE_URL
    assert token_keys({"RUTTER_TOKEN_KEY_FILE": str(key_file), "WAREHOUSE_URL": "postgresql://x/y"}) == first
    with pytest.raises(ValueError, match="must be Fernet keys") as bad:
        token_cipher({"RUTTER_TOKEN_KEY": "not-a-key-secret-value"})
    assert "not-a-key-secret-value" not in str(bad.value)
