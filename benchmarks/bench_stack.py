"""What the daemon-driven benchmarks (bench_backfill, scale_e2e) share: their Dagster home, and its cleanup.

One place, so that both measure the stack as ``rutter-pipeline dev`` runs it: the project's
``dagster.yaml`` on PostgreSQL storage, events written in batches, the client's rate limit out of
the way (the sandbox is the only API), and no incremental sync starting in the middle of a timing.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from contextlib import ExitStack
from datetime import date
from pathlib import Path

from rutter_pipeline.stack import dagster_env, psycopg2_url

ROOT = Path(__file__).resolve().parent.parent
NEVER_CRON = "0 0 1 1 *"


def work_databases(
    stack: ExitStack, folder_prefix: str, name: str, pg_url: str | None, keep: bool
) -> tuple[Path, str, str]:
    """A work folder (``<folder_prefix>*``: the daemon's processes are found by it), and fresh
    ``<name>_warehouse_*`` and ``<name>_dagster_*`` databases on ``pg_url`` or an embedded server.

    Everything is undone when ``stack`` unwinds: the databases are dropped last (after the daemon
    and the instance are gone) unless ``keep``; the embedded server stops before its folder goes
    (pgserver's own stop runs at exit, when the data directory is already gone, and then left the
    server running).
    """
    from rutter_pipeline.warehouse.embedded import (
        drop_database,
        ensure_database,
        start_embedded_postgres,
        stop_embedded_postgres,
    )

    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=folder_prefix)))
    server = pg_url or start_embedded_postgres(work / "pg", persistent=False)
    if not pg_url:
        stack.callback(stop_embedded_postgres, work / "pg")
    suffix = uuid.uuid4().hex[:8]
    names = (f"{name}_warehouse_{suffix}", f"{name}_dagster_{suffix}")
    urls = [ensure_database(server, n) for n in names]
    if not keep:  # registered first, so dropped after everything registered later has stopped
        for n in names:
            stack.callback(drop_database, server, n)
    return work, urls[0], urls[1]


def dagster_home_env(work: Path, dagster_url: str, warehouse_url: str, sandbox, history_start: date) -> dict[str, str]:
    """A fresh Dagster home under ``work`` with the project's dagster.yaml, and the variables to use it."""
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": psycopg2_url(dagster_url),
        "WAREHOUSE_URL": warehouse_url,
        "RUTTER_BASE_URL": sandbox.base_url,
        "RUTTER_CLIENT_ID": sandbox.client_id,
        "RUTTER_CLIENT_SECRET": sandbox.client_secret,
        "RUTTER_HISTORY_START": history_start.isoformat(),
        "RUTTER_MAX_REQUESTS_PER_10S": "1000000",
        "RUTTER_PIPELINE_COMPUTE_LOGS": str(work / "compute_logs"),
        "RUTTER_INCREMENTAL_CRON": NEVER_CRON,
        **dagster_env(),
    }


def stop_code_servers(home: Path, grace: float = 10) -> None:
    """Stop the code servers the daemon started for this instance, which outlive it.

    A daemon's code server stops 20 s after its last heartbeat, but only once it has seen its
    launched runs' processes end, which it checks in the instance's storage; the benchmark drops
    that database right after the backfill, and the server then waited forever (seen after every
    full-size run). They are found by the instance folder named in their command line.
    """
    import psutil

    servers = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "grpc" in cmdline and str(home) in " ".join(cmdline):
            servers.append(proc)
    for proc in servers:
        proc.terminate()
    _, alive = psutil.wait_procs(servers, timeout=grace)
    for proc in alive:
        proc.kill()
