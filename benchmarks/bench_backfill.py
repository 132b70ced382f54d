"""Backfill benchmark: a year of one big merchant's orders through ``dagster-daemon``, as a user launches it.

Where ``bench_ingest.py`` times one in-process range run, this times the production path: the
project's own ``dagster.yaml`` (PostgreSQL storage, queued runs, one run at a time per connection),
a real ``dagster-daemon`` (backfill daemon, run queue, sensors), and a backfill of ``landing/orders``
+ ``warehouse/orders`` over every day of one connection, launched with the GraphQL mutation the UI's
"Launch backfill" button sends. Dagster cuts it into range runs under the assets' BackfillPolicy
(``RUTTER_BACKFILL_MONTHS_PER_RUN`` months each), and each run is a process of its own.

The clock starts when the backfill is launched and stops when its last run has finished; the
warehouse's row count is then checked against what the sandbox served.

    .venv/bin/python benchmarks/bench_backfill.py                      # ~1M orders over 365 days
    .venv/bin/python benchmarks/bench_backfill.py --days 30 --orders-per-day 500
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_ingest import DEFAULT_ORDERS_PER_DAY, NOW  # noqa: E402
from bench_stack import dagster_home_env, stop_code_servers, work_databases  # noqa: E402
from ingest_phases import iter_pages  # noqa: E402

from rutter_pipeline.rutter.windows import day_window_ms  # noqa: E402
from rutter_pipeline.sandbox import SandboxConfig, run_sandbox  # noqa: E402

LAUNCH_BACKFILL = """
mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } } }
"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def main(argv: list[str] | None = None) -> int:
    # Fresh databases each run: their access tokens are stored encrypted, and a key of this run's own
    # will do (a warehouse of your own needs RUTTER_TOKEN_KEY; warehouse/tokens.py).
    from rutter_pipeline.warehouse.tokens import new_key

    os.environ.setdefault("RUTTER_TOKEN_KEY", new_key())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--orders-per-day", type=int, default=DEFAULT_ORDERS_PER_DAY)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--pg-url", help="a PostgreSQL server URL to use (default: start an embedded one)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        work, warehouse_url, dagster_url = work_databases(stack, "bench-backfill-", "bench", args.pg_url, args.keep)
        config = SandboxConfig(
            client_id="bench",
            client_secret="bench-secret",
            now=NOW,
            rate_limit_per_10s=10_000_000,
            cache_records=int(args.days * args.orders_per_day * 2.5) + 100_000,
        )
        sandbox = stack.enter_context(run_sandbox(config, subprocess=True))
        conn = sandbox.control.create_connection(
            platform="SHOPIFY", orders_per_day=args.orders_per_day, history_days=args.days + 2, seed=args.seed
        )
        last_day = NOW.date() - timedelta(days=1)
        first_day = last_day - timedelta(days=args.days - 1)
        job = {
            "base_url": sandbox.base_url,
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "access_token": conn["access_token"],
            "limit": 500,
            "start_ms": day_window_ms(first_day)[0],
            "end_ms": day_window_ms(last_day)[1],
        }
        # Warm-up: the sandbox generates every day once, untimed, as in bench_ingest.
        served = sum(len(records) for records, _ in iter_pages(job))

        env = dagster_home_env(work, dagster_url, warehouse_url, sandbox, first_day - timedelta(days=1))
        os.environ.update(env)
        result = run_backfill(conn["connection_id"], conn["access_token"], first_day, last_day, args.timeout, stack)

        import psycopg

        with psycopg.connect(warehouse_url) as pg:
            stored = pg.execute(
                "SELECT count(*) FROM rutter.orders WHERE connection_id = %s", (conn["connection_id"],)
            ).fetchone()[0]  # type: ignore[index]
    print(
        f"bench_backfill: {os.cpu_count()} CPUs, {args.days} days x ~{args.orders_per_day} orders/day, "
        f"{served:,} orders served, {stored:,} in rutter.orders"
    )
    print("| run | days | seconds (start -> end) | status |")
    print("|---|---|---|---|")
    for run in result["runs"]:
        print(f"| {run['range']} | {run['days']} | {run['seconds']:.1f} | {run['status']} |")
    total = result["seconds"]
    print(
        f"backfill: {len(result['runs'])} runs, {total:.1f} s from launch to the last run's end, "
        f"{served / total:,.0f} orders/s, status {result['status']}"
    )
    if stored != served or any(r["status"] != "SUCCESS" for r in result["runs"]):
        print("FAILED: the warehouse does not hold what the sandbox served, or a run failed", file=sys.stderr)
        return 1
    return 0


def run_backfill(connection_id: str, access_token: str, first_day, last_day, timeout: float, stack: ExitStack) -> dict:
    import dagster as dg
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    from rutter_pipeline.connections.registry import ConnectionRegistry
    from rutter_pipeline.defs.partitions import DAYS_TAG, month_end, partition_key
    from rutter_pipeline.warehouse.migrations import migrate

    migrate(os.environ["WAREHOUSE_URL"])
    ConnectionRegistry(os.environ["WAREHOUSE_URL"]).add(connection_id, access_token, platform="SHOPIFY")
    instance = stack.enter_context(dg.DagsterInstance.get())
    instance.add_dynamic_partitions("connections", [connection_id])
    # Runs after the daemon is gone (the stack unwinds in reverse).
    stack.callback(stop_code_servers, Path(os.environ["DAGSTER_HOME"]))
    daemon_log = open(Path(os.environ["DAGSTER_HOME"]) / "daemon.log", "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(daemon_log.close)
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "rutter_pipeline.definitions"],
        cwd=ROOT,
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(daemon.wait, 30)
    stack.callback(daemon.terminate)
    target = ModuleTarget(
        module_name="rutter_pipeline.definitions",
        attribute="defs",
        working_directory=str(ROOT),
        location_name="rutter_pipeline",
    )
    days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    with create_test_daemon_workspace_context(target, instance) as context:
        started = time.time()
        launched = execute_dagster_graphql(
            context.create_request_context(),
            LAUNCH_BACKFILL,
            {
                "p": {
                    "assetSelection": [{"path": ["landing", "orders"]}, {"path": ["warehouse", "orders"]}],
                    # The months holding the days, narrowed to exactly those days by the rutter/days tag
                    # (the backfill's tags go on each of its runs).
                    "partitionNames": sorted({str(partition_key(connection_id, d)) for d in days}),
                    "tags": [{"key": DAYS_TAG, "value": f"{first_day.isoformat()}..{last_day.isoformat()}"}],
                }
            },
        ).data["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        backfill_id = launched["backfillId"]
        deadline = time.monotonic() + timeout
        while True:
            backfill = instance.get_backfill(backfill_id)
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            done = backfill.status.value not in ("REQUESTED",) and all(r.status.value in FINISHED for r in runs)
            if done and runs:
                break
            if daemon.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}; see {daemon_log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"backfill still running after {timeout}s: {[r.status for r in runs]}")
            time.sleep(1)
    out: list[dict[str, Any]] = []
    for run in sorted(runs, key=lambda r: r.tags.get("dagster/asset_partition_range_start", "")):
        stats = instance.get_run_stats(run.run_id)
        first, last = (date_of(run.tags[f"dagster/asset_partition_range_{end}"]) for end in ("start", "end"))
        first, last = max(first, first_day), min(month_end(last), last_day)
        out.append(
            {
                "range": f"{first} .. {last}",
                "days": (last - first).days + 1,
                "seconds": (stats.end_time or 0) - (stats.start_time or 0),
                "status": run.status.value,
                "end": stats.end_time,
            }
        )
    return {
        "runs": out,
        "seconds": max(r["end"] or 0 for r in out) - started,
        "status": instance.get_backfill(backfill_id).status.value,
    }


def date_of(key: str) -> date:
    return date.fromisoformat(key.rpartition("|")[2])


if __name__ == "__main__":
    raise SystemExit(main())
