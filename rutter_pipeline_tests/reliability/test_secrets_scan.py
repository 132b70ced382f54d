"""No secret anywhere: after ingestion, the whole connection lifecycle (webhooks through the receiver,
pause, resume) and a failing run, all under the real ``dagster-daemon``, scan

- Dagster's storage: every row of every table (event log, runs with their tags and config, ticks,
  cursors, ...),
- the files of the run (compute logs, the daemon's log, the Dagster home, the state folder),
- the warehouse: every table, the registry included (its tokens are ciphertext), and
- the Python logs of this process (the webhook receiver, the registry, the sensors' helpers)

for the client secret, its Basic-auth form, every access token and the token key: none appears.
"""

import base64
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.webhooks.server import run_receiver
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.daemon_stack import DaemonStack, daemon_stack

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
BOGUS_TOKEN = "access-bogus-7d9c2a51-0b6e-4f3c-9e1a-revoked-by-merchant"
# Loggers of the stand-in for Rutter itself: it knows the secrets by definition.
RUTTER_SIDE = ("rutter_pipeline.sandbox", "uvicorn.access")


def table_rows(url: str) -> tuple[int, str]:
    """(row count, text) of every row of every table of the database."""
    with psycopg.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        ).fetchall()
        rows = [r[0] for (t,) in tables for r in conn.execute(f"SELECT x::text FROM {t} x")]
    return len(rows), "\n".join(rows)


def files_text(root: Path) -> tuple[int, str]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), "\n".join(p.read_bytes().decode("utf-8", "replace") for p in files)


def wait_until(what: str, check, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def finished_runs_of(stack: DaemonStack, connection_id: str) -> list[dg.DagsterRun]:
    runs = stack.instance.get_runs(filters=dg.RunsFilter(tags={"rutter/connection": connection_id}))
    return runs if runs and all(r.status in FINISHED for r in runs) else []


def test_no_secret_in_dagster_storage_files_warehouse_or_logs(
    realtime_pipeline: Pipeline, dagster_pg_url: str, tmp_path: Path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    pipeline = realtime_pipeline
    sandbox = pipeline.sandbox
    overrides = {
        "RUTTER_SENSOR_INTERVAL_SECONDS": "1",
        "RUTTER_WEBHOOK_DEBOUNCE_SECONDS": "1",
        "RUTTER_RUN_RETRY_DELAY_SECONDS": "1",
        "RUTTER_HISTORY_START": (pipeline.today - timedelta(days=12)).isoformat(),
    }
    registry = ConnectionRegistry(pipeline.warehouse_url)
    with (
        daemon_stack(pipeline, dagster_pg_url, tmp_path, monkeypatch, **overrides) as stack,
        run_receiver(pipeline.warehouse_url, sandbox.client_secret) as receiver,
    ):
        sandbox.control.configure_webhooks(url=receiver, retry_base=0.05)

        # 1. ingestion: a range run of the registered connection
        loaded = stack.launch_range(pipeline.connection_id, pipeline.today - timedelta(days=12), pipeline.today)
        assert stack.wait(loaded, FINISHED).status == dg.DagsterRunStatus.SUCCESS

        # 2. the lifecycle: a merchant connects (its token comes in a webhook), pauses and comes back
        merchant = sandbox.control.create_connection(
            ready=False, initial_sync_minutes=20, history_days=12, orders_per_day=6
        )
        cid = merchant["connection_id"]
        sandbox.control.advance(30)
        sandbox.control.wait_for_webhooks(timeout=30)
        wait_until("the history backfill", lambda: finished_runs_of(stack, cid))
        assert registry.get(cid).state == "ready"
        sandbox.control.action(cid, "needs_update")
        sandbox.control.wait_for_webhooks(timeout=30)
        wait_until("the pause", lambda: registry.get(cid).state == "needs_update")
        sandbox.control.action(cid, "reconnect")
        sandbox.control.wait_for_webhooks(timeout=30)
        wait_until(
            "the gap backfill",
            lambda: any(r.tags.get("rutter/trigger") == "gap" for r in finished_runs_of(stack, cid)),
        )
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in finished_runs_of(stack, cid))

        # 3. a failing run: a token Rutter no longer accepts (its error bodies and our error paths)
        registry.add("bogus", BOGUS_TOKEN, platform="SHOPIFY")
        stack.instance.add_dynamic_partitions("connections", ["bogus"])
        failing = stack.launch(
            "ingest_job",
            {
                "dagster/asset_partition_range_start": f"bogus|{pipeline.today.replace(day=1)}",
                "dagster/asset_partition_range_end": f"bogus|{pipeline.today.replace(day=1)}",
                "rutter/connection": "bogus",
                "dagster/max_retries": "0",
            },
        )
        assert stack.wait(failing, FINISHED).status == dg.DagsterRunStatus.FAILURE
        log = stack.home / "daemon.log"
        wait_until("the failure alert", lambda: "alert sent" in log.read_text(errors="replace"), timeout=60)

    client_id, secret = sandbox.client_id, sandbox.client_secret
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    secrets = {
        "client secret": secret,
        "Basic auth": basic,
        "token key": os.environ["RUTTER_TOKEN_KEY"].split(",")[0],
        "token of the registered connection": pipeline.access_token,
        "token from the webhook": merchant["access_token"],
        "rejected token": BOGUS_TOKEN,
    }
    dagster_rows, dagster_text = table_rows(dagster_pg_url)
    warehouse_rows, warehouse_text = table_rows(pipeline.warehouse_url)
    file_count, file_text = files_text(tmp_path)
    records = [r for r in caplog.records if not r.name.startswith(RUTTER_SIDE)]
    log_text = "\n".join(
        f"{r.getMessage()} {caplog.handler.formatter.formatException(r.exc_info) if r.exc_info else ''}"
        for r in records
    )
    # The scan is not vacuous: each source holds the story it should.
    assert dagster_rows > 500 and warehouse_rows > 500 and file_count > 10 and len(records) > 10
    assert [p for p in (tmp_path / "compute_logs").rglob("*") if p.is_file()], "no compute logs were written"
    for where, text in [
        ("Dagster storage", dagster_text),
        ("files", file_text),
        ("warehouse", warehouse_text),
        ("Python logs", log_text),
    ]:
        found = [name for name, value in secrets.items() if value in text]
        assert found == [], f"{found} found in {where}"
    print(
        f"secrets scan: {len(secrets)} values over {dagster_rows} Dagster rows, {warehouse_rows} warehouse rows, "
        f"{file_count} files, {len(records)} log records: none found"
    )
