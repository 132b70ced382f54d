"""Onboarding benchmark: ``rutter-pipeline connections import`` of N connections, as a user runs it.

Generates N rows into a temporary CSV and times the real command (a process of its own: argument
parsing, validation, migrations, one registry transaction, one Dagster partitions call) against a
fresh warehouse and Dagster storage, then times a re-import of the same file, which must change
nothing. Prints one JSON line.

    .venv/bin/python benchmarks/bench_import.py                 # 1,000 connections, embedded PostgreSQL
    .venv/bin/python benchmarks/bench_import.py -n 5000 --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from rutter_pipeline.warehouse.embedded import (
    drop_database,
    ensure_database,
    start_embedded_postgres,
    stop_embedded_postgres,
)

CLI = Path(sys.executable).with_name("rutter-pipeline")


def main(argv: list[str] | None = None) -> int:
    # Fresh databases each run: their access tokens are stored encrypted, and a key of this run's own
    # will do (a warehouse of your own needs RUTTER_TOKEN_KEY; warehouse/tokens.py).
    from rutter_pipeline.warehouse.tokens import new_key

    os.environ.setdefault("RUTTER_TOKEN_KEY", new_key())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=1000)
    parser.add_argument("--pg-url", help="a PostgreSQL server URL to use (default: start an embedded one)")
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-import-")))
        server = args.pg_url or start_embedded_postgres(work / "pg", persistent=False)
        if not args.pg_url:  # stopped before the temporary directory goes (see bench_backfill.py)
            stack.callback(stop_embedded_postgres, work / "pg")
        suffix = uuid.uuid4().hex[:8]
        urls = {}
        for role in ("warehouse", "dagster"):
            name = f"bench_import_{role}_{suffix}"
            urls[role] = ensure_database(server, name)
            stack.callback(drop_database, server, name)
        env = {
            **os.environ,
            "RUTTER_PIPELINE_STATE_DIR": str(work / "state"),
            "WAREHOUSE_URL": urls["warehouse"],
            "DAGSTER_PG_URL": urls["dagster"],
        }
        env.pop("DAGSTER_HOME", None)
        path = work / "connections.csv"
        rows = [
            f"bench-{uuid.uuid4()},access-sandbox-{uuid.uuid4()},{'SHOPIFY' if i % 3 else 'AMAZON'}"
            for i in range(args.connections)
        ]
        path.write_text("connection_id,access_token,platform\n" + "\n".join(rows) + "\n")
        first, first_out = timed_import(path, env)
        again, again_out = timed_import(path, env)
    n = args.connections
    expected = (
        f"imported {n} connections: {n} added, 0 updated, 0 unchanged",
        f"imported {n} connections: 0 added, 0 updated, {n} unchanged",
    )
    if expected[0] not in first_out or expected[1] not in again_out:
        print(f"FAILED: unexpected summaries:\n{first_out}\n{again_out}", file=sys.stderr)
        return 1
    print(json.dumps({"connections": n, "seconds": round(first, 3), "reimport_seconds": round(again, 3)}))
    return 0


def timed_import(path: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(CLI), "connections", "import", str(path)], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"connections import exited {proc.returncode}:\n{proc.stderr}")
    return elapsed, proc.stdout


if __name__ == "__main__":
    raise SystemExit(main())
