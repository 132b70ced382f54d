"""``rutter-pipeline connections import FILE``: the file parser, then the real command against a real
warehouse and Dagster instance (all or nothing, idempotent, never a token in its output)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import psycopg
import pytest

from rutter_pipeline.connections.registry import ConnectionRow
from rutter_pipeline.connections_file import ConnectionsFileError, parse_connections, read_connections_file
from rutter_pipeline.stack import psycopg2_url
from rutter_pipeline.warehouse.tokens import token_cipher
from rutter_pipeline_tests.fixtures.cli import Cli

pytestmark = pytest.mark.postgres


def token(i: int) -> str:
    return f"access-sandbox-importtoken-{i:04d}-b7c1"


def csv_text(n: int, start: int = 0) -> str:
    lines = ["connection_id,access_token,platform"]
    lines += [f"conn-{i:04d},{token(i)},{'SHOPIFY' if i % 2 else ''}" for i in range(start, start + n)]
    return "\n".join(lines) + "\n"


def jsonl_text(n: int, start: int = 0) -> str:
    records = [{"connection_id": f"conn-{i:04d}", "access_token": token(i)} for i in range(start, start + n)]
    records[0]["platform"] = "AMAZON"
    return "".join(orjson.dumps(r).decode() + "\n" for r in records)


def errors_of(data: str, fmt: str) -> list[str]:
    with pytest.raises(ConnectionsFileError) as raised:
        parse_connections(data.encode(), fmt)
    assert all(token(i) not in str(raised.value) for i in range(20))
    return raised.value.errors


# --- the parser ---------------------------------------------------------------------------------------


def test_csv_and_jsonl_rows() -> None:
    data = "\ufeffconnection_id, access_token\r\n\r\nc1 , tok-1\r\n,,\r\nc2,tok-2\r\n"
    assert parse_connections(data.encode(), "csv") == [ConnectionRow("c1", "tok-1"), ConnectionRow("c2", "tok-2")]
    jsonl = (
        '{"connection_id": "c1", "access_token": "tok-1", "platform": "SHOPIFY"}\n\n'
        '{"connection_id": "c2", "access_token": "tok-2", "platform": null}\n'
    )
    assert parse_connections(jsonl.encode(), "jsonl") == [
        ConnectionRow("c1", "tok-1", "SHOPIFY"),
        ConnectionRow("c2", "tok-2"),
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.csv", "csv"), ("a.JSONL", "jsonl"), ("a.ndjson", "jsonl"), ("a.json", "jsonl"), ("a.txt", "jsonl")],
)
def test_format_by_extension_then_first_character(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(jsonl_text(2) if expected == "jsonl" else csv_text(2))
    assert [r.connection_id for r in read_connections_file(path)] == ["conn-0000", "conn-0001"]
    sniffed = tmp_path / "no-extension"
    sniffed.write_text("\n  " + (jsonl_text(1) if expected == "jsonl" else csv_text(1)))
    assert read_connections_file(sniffed)[0].access_token == token(0)


def test_csv_errors_name_every_line_and_no_token() -> None:
    data = "\n".join(
        [
            "connection_id,access_token,platform",  # 1
            f"conn-0001,{token(1)},SHOPIFY",  # 2
            f",{token(2)},",  # 3: no id
            "conn-0003,,",  # 4: no token
            f"conn-0001,{token(1)},SHOPIFY",  # 5: an identical duplicate is refused too
            f"conn-0001,{token(5)},",  # 6: a conflicting duplicate
            f"conn-0006,{token(6)},SHOPIFY,extra",  # 7
            f"conn|0007,{token(7)},",  # 8: would break the '<connection>|<day>' partition key
            f"conn-0008,{token(8)} {token(9)},",  # 9
        ]
    )
    assert errors_of(data, "csv") == [
        "line 3: connection_id is empty",
        "line 4: access_token is empty",
        "line 5: connection_id given again (first on line 2)",
        "line 6: connection_id given again (first on line 2)",
        "line 7: expected 3 fields, found 4",
        "line 8: connection_id must not contain '|' or '...' or control characters",
        "line 9: access_token contains whitespace or control characters",
    ]


def test_csv_header_errors() -> None:
    # no header: the first row is data, and its token must not be echoed as a column name
    assert errors_of(f"conn-0001,{token(1)},SHOPIFY\n", "csv") == [
        "line 1: the header must be connection_id,access_token,platform (platform optional); "
        "missing connection_id, access_token"
    ]
    assert errors_of("connection_id,access_token,region,platform,platform\nc1,t,x,y,z\n", "csv") == [
        "line 1: unknown column 'region'",
        "line 1: column 'platform' appears more than once",
    ]
    assert errors_of("connection_id,access_token\n", "csv") == ["line 1: no connections in the file"]


def test_jsonl_errors_name_every_line_and_no_token() -> None:
    lines = [
        {"connection_id": "c1", "access_token": token(1)},
        {"connection_id": "c2", "access_token": token(2), "region": "eu"},
        {"connection_id": 3, "access_token": token(3)},
        {"access_token": token(4)},
        {"connection_id": "c5", "access_token": None},
    ]
    data = "".join(orjson.dumps(r).decode() + "\n" for r in lines)
    data += f'{{"connection_id": "c6", "access_token": "{token(6)}",}}\n'  # line 6: trailing comma
    data += f'["c7", "{token(7)}"]\n'  # line 7
    errors = errors_of(data, "jsonl")
    assert errors[:4] == [
        "line 2: unknown key 'region'",
        "line 3: connection_id must be a string, not int",
        "line 4: connection_id is missing",
        "line 5: access_token is empty",
    ]
    assert errors[4].startswith("line 6: malformed JSON (")
    assert errors[5:] == ["line 7: expected a JSON object with connection_id, access_token, platform"]
    assert errors_of(f'[{{"connection_id": "c1", "access_token": "{token(1)}"}}]', "jsonl") == [
        "line 1: a JSON array; write one JSON object per line (JSON lines)"
    ]


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(csv_text(3).encode() + b"conn-9,\xff\xfe,\n")
    with pytest.raises(ConnectionsFileError, match="line 5: not valid UTF-8"):
        read_connections_file(path)


# --- the command against a real warehouse and Dagster instance ----------------------------------------


@pytest.fixture
def stack_cli(pg_url: str, dagster_pg_url: str, tmp_path: Path) -> Cli:
    """The command's environment: a fresh warehouse and Dagster storage, a state folder of its own."""
    env = {
        **os.environ,
        "RUTTER_PIPELINE_STATE_DIR": str(tmp_path / "state"),
        "WAREHOUSE_URL": pg_url,
        "DAGSTER_PG_URL": dagster_pg_url,
    }
    env.pop("DAGSTER_HOME", None)
    return Cli(env)


@pytest.fixture
def partitions(stack_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Reads the ``connections`` partitions of the instance the command wrote to."""
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(stack_cli.env["DAGSTER_PG_URL"]))
    monkeypatch.setenv("RUTTER_PIPELINE_COMPUTE_LOGS", str(Path(stack_cli.env["RUTTER_PIPELINE_STATE_DIR"]) / "logs"))

    def read() -> list[str]:
        home = Path(stack_cli.env["RUTTER_PIPELINE_STATE_DIR"]) / "dagster_home"
        if not home.exists():
            return []
        with dg.DagsterInstance.from_config(str(home)) as instance:
            return sorted(instance.get_dynamic_partitions("connections"))

    yield read


def pool_limits(cli: Cli) -> dict[str, int]:
    """The instance's pools and their limits (read with the ``partitions`` fixture's environment)."""
    home = Path(cli.env["RUTTER_PIPELINE_STATE_DIR"]) / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        return {key: storage.get_concurrency_info(key).slot_count for key in storage.get_concurrency_keys()}


def registry_rows(url: str) -> list[tuple]:
    """The registry's rows, the token decrypted (the stored ciphertext is opaque)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('rutter.connections')").fetchone() == (None,):
            return []
        rows = conn.execute(
            "SELECT connection_id, token_ciphertext, platform, state, updated_at FROM rutter.connections ORDER BY 1"
        ).fetchall()
    cipher = token_cipher()
    return [(r[0], cipher.decrypt(r[1]) if r[1] else None, *r[2:]) for r in rows]


def run_import(cli: Cli, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli.command("rutter-pipeline", "connections", "import", str(path), *extra),
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_import_csv_then_jsonl_then_again(stack_cli: Cli, partitions, pg_url: str, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text(csv_text(5))
    done = run_import(stack_cli, first)
    assert done.returncode == 0, done.stderr
    assert "imported 5 connections: 5 added, 0 updated, 0 unchanged" in done.stdout
    ids = [f"conn-{i:04d}" for i in range(5)]
    assert [(r[0], r[1], r[3]) for r in registry_rows(pg_url)] == [(c, token(i), "ready") for i, c in enumerate(ids)]
    assert partitions() == ids

    # JSON lines: three known (one gets a platform), three new
    second = tmp_path / "second.ndjson"
    second.write_text(jsonl_text(6, start=2))
    done = run_import(stack_cli, second)
    assert done.returncode == 0, done.stderr
    assert "imported 6 connections: 3 added, 1 updated, 2 unchanged" in done.stdout
    ids += [f"conn-{i:04d}" for i in range(5, 8)]
    assert partitions() == ids
    assert next(r for r in registry_rows(pg_url) if r[0] == "conn-0002")[2] == "AMAZON"

    # the landing pool exists before any run could race to create it (defs/pools.py), at dagster.yaml's default
    assert pool_limits(stack_cli) == {"rutter_api": 2}

    before = registry_rows(pg_url)
    again = run_import(stack_cli, second)
    assert again.returncode == 0, again.stderr  # the pool already there: nothing to create, nothing fails
    assert "imported 6 connections: 0 added, 0 updated, 6 unchanged" in again.stdout
    assert "added 0 partitions" in again.stdout
    assert registry_rows(pg_url) == before and partitions() == ids

    listed = stack_cli.run("rutter-pipeline", "connections", "list")
    assert all(c in listed.stdout for c in ids)
    for proc in (done, again, listed):
        assert "importtoken" not in proc.stdout + proc.stderr


def test_one_bad_row_writes_nothing(stack_cli: Cli, partitions, pg_url: str, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(csv_text(2))
    assert run_import(stack_cli, good).returncode == 0
    before = (registry_rows(pg_url), partitions())

    bad = tmp_path / "bad.csv"
    lines = csv_text(10, start=2).splitlines()
    lines[6] = f"conn-bad,{token(99)},SHOPIFY,surplus"  # line 7 of the file
    bad.write_text("\n".join(lines) + "\n")
    refused = run_import(stack_cli, bad)
    assert refused.returncode == 2
    assert "line 7: expected 3 fields, found 4" in refused.stderr
    assert "importtoken" not in refused.stdout + refused.stderr
    assert (registry_rows(pg_url), partitions()) == before

    dry = run_import(stack_cli, tmp_path / "good.csv", "--dry-run")
    assert dry.returncode == 0 and "would import 2 connections: 0 added, 0 updated, 2 unchanged" in dry.stdout
    good.write_text(csv_text(3))
    dry = run_import(stack_cli, good, "--dry-run")
    assert "would import 3 connections: 1 added, 0 updated, 2 unchanged; 1 new partitions" in dry.stdout
    assert (registry_rows(pg_url), partitions()) == before


def test_invalid_file_touches_no_stack(stack_cli: Cli, tmp_path: Path) -> None:
    """Validation runs before the state folder, DAGSTER_HOME or an embedded server are touched."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"connection_id": "c1"}\n')
    refused = run_import(stack_cli, bad)
    assert refused.returncode == 2 and "line 1: access_token is missing" in refused.stderr
    assert not Path(stack_cli.env["RUTTER_PIPELINE_STATE_DIR"]).exists()
    missing = run_import(stack_cli, tmp_path / "nope.csv")
    assert missing.returncode == 2 and "cannot read the file" in missing.stderr


def test_list_never_prints_a_token(stack_cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(csv_text(3))
    assert run_import(stack_cli, path).returncode == 0
    stack_cli.run(
        "rutter-pipeline", "connections", "add", "conn-added", "--access-token", token(42), "--platform", "SHOPIFY"
    )
    listed = stack_cli.run("rutter-pipeline", "connections", "list").stdout
    assert listed.splitlines() == [
        "conn-0000\t-\tready",
        "conn-0001\tSHOPIFY\tready",
        "conn-0002\t-\tready",
        "conn-added\tSHOPIFY\tready",
    ]
    assert all(token(i) not in listed for i in (0, 1, 2, 42)) and "importtoken" not in listed
