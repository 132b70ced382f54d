"""The README's main command: ``rutter-pipeline dev`` brings up embedded PostgreSQL, the sandbox, the
webhook receiver and the Dagster UI (webserver + daemon). The demo merchants connect by themselves
(INITIAL_UPDATE through the receiver), their partitions appear and their history backfills run without
anyone touching the UI; then a partition launched the way the UI does it (GraphQL) lands its rows.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests

from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.sandbox import SandboxControl
from rutter_pipeline.warehouse.embedded import start_embedded_postgres, stop_embedded_postgres, with_database

pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent

ASSETS = """{ assetNodes { assetKey { path } dependencyKeys { path }
  partitionKeysByDimension { name partitionKeys } } }"""
LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
HISTORY_RUNS = """{ runsOrError(filter: {tags: [{key: "rutter/trigger", value: "history"}]}) {
  ... on Runs { results { runId status } } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"dev exited with {proc.returncode} while waiting for {what}:\n{log.read_text()[-4000:]}"
            )
        try:
            value = predicate()
        except (requests.RequestException, AssertionError):
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def test_dev_brings_up_the_ui_with_demo_connections_and_a_launched_partition_lands(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_"))}
    env["RUTTER_PIPELINE_STATE_DIR"] = str(state)
    stdout = tmp_path / "stdout.txt"  # the banner; everything else goes to the state folder's dev.log
    log = state / "dev.log"
    with stdout.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "rutter-pipeline"), "dev", "--port", str(port), "--connections", "2", "--history-days", "5"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        nodes = wait_for(lambda: graphql(port, ASSETS)["assetNodes"], 240, "the Dagster UI", proc, log)
        deps = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        assert deps["warehouse/orders"] == {"landing/orders"}
        assert deps["marts/daily_sales"] == {"warehouse/orders"}

        def dimensions() -> dict[str, list[str]] | None:
            node = next(
                n for n in graphql(port, ASSETS)["assetNodes"] if n["assetKey"]["path"] == ["landing", "orders"]
            )
            dims = {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}
            return dims if len(dims["connection"]) == 2 else None

        dims = wait_for(dimensions, 180, "the demo merchants' partitions (INITIAL_UPDATE -> sensor)", proc, log)
        assert len(dims["month"]) >= 1
        history_done = wait_for(
            lambda: (
                (runs := graphql(port, HISTORY_RUNS)["runsOrError"]["results"])
                and len(runs) >= 2
                and all(r["status"] in ("SUCCESS", "FAILURE") for r in runs)
                and runs
            ),
            300,
            "the history backfills the lifecycle sensor started",
            proc,
            log,
        )
        assert {r["status"] for r in history_done} == {"SUCCESS"}, log.read_text()[-4000:]

        sandbox_url = re.search(r"sandbox: (http://\S+)/versioned", stdout.read_text()).group(1)
        # the month holding yesterday, complete up to yesterday (the sandbox's clock follows the real one)
        from datetime import UTC, datetime, timedelta

        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        connection_id, month = dims["connection"][0], yesterday.replace(day=1).isoformat()
        assert month in dims["month"]
        launched = graphql(
            port,
            LAUNCH,
            {
                "p": {
                    "assetSelection": [{"path": ["landing", "orders"]}, {"path": ["warehouse", "orders"]}],
                    "partitionNames": [f"{connection_id}|{month}"],
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        status = wait_for(
            lambda: (
                (s := graphql(port, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"])
                not in ("REQUESTED",)
                and s
            ),
            240,
            "the backfill to finish",
            proc,
            log,
        )
        assert status == "COMPLETED_SUCCESS", log.read_text()[-4000:]

        from datetime import date

        first = max(date.fromisoformat(month), yesterday - timedelta(days=4))  # the demo's 5 days of history
        lo, hi = day_window_ms(first)[0], day_window_ms(yesterday)[1]
        truth = SandboxControl(sandbox_url).ground_truth("orders", connection_id, created_at_min=lo, created_at_max=hi)
        warehouse = with_database(start_embedded_postgres(state / "postgres", persistent=True), "rutter_warehouse")
        with psycopg.connect(warehouse) as conn:
            ids = {
                r[0]
                for r in conn.execute(
                    "SELECT id FROM rutter.orders WHERE connection_id = %s AND _partition_date BETWEEN %s AND %s",
                    (connection_id, first, yesterday),
                )
            }
        assert truth and ids == {r["id"] for r in truth}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_embedded_postgres(state / "postgres")
