"""Scale benchmark: the Dagster side of N connections with two years of history, on PostgreSQL.

What ``docs/reference/dagster-scale-study.md`` measured for the old day x connection shape,
measured again for whatever shape ``rutter_pipeline.defs.partitions.ingest_partitions`` builds
(the project is imported for its partition definition and its ``Definitions`` only, so the script
runs on either shape):

1. Seeding: N connection ids as dynamic partitions (one call), then for every partitioned asset and
   every partition a run's history (one ``ASSET_MATERIALIZATION_PLANNED`` and one
   ``ASSET_MATERIALIZATION`` from a SUCCESS run; a scattered ~1 % of partitions planned by a FAILURE
   run and never materialized), written in batches through Dagster's own event APIs; plus the
   per-day coverage rows of ``rutter.load_log`` by COPY when that table exists.
2. The partitions page of each partitioned asset: a real ``dagster-webserver`` answering the UI's
   ``PartitionHealthQuery`` (plus ``partitionStats``), warm and right after one new connection.
3. Each sensor and schedule tick with N live connections, evaluated as the code server evaluates it
   (``dagster._grpc.impl.get_external_sensor_execution`` / ``get_external_schedule_execution`` with an
   ``instance_ref`` and the real ``defs``); the automation sensor, which the daemon itself evaluates,
   through ``evaluate_automation_conditions``.
4. Peak RSS (VmHWM) of the webserver and of its code server.

Prints one JSON object on stdout (progress goes to stderr).

    .venv/bin/python benchmarks/scale_dagster.py --connections 100 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/scale_dagster.py --connections 3 --months 3      # embedded PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from contextlib import ExitStack, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import requests

import rutter_pipeline
from rutter_pipeline.stack import dagster_env, psycopg2_url
from rutter_pipeline.warehouse.embedded import (
    drop_database,
    ensure_database,
    start_embedded_postgres,
    stop_embedded_postgres,
)

ROOT = Path(rutter_pipeline.__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ID_NAMESPACE = uuid.NAMESPACE_URL
HISTORY_JOB = "ingest_job"  # the job a history backfill's runs belong to; only its name is stored
LIFECYCLE_EVENTS = 50
LOAD_LOG_ENTITIES = ("orders", "products", "customers", "transactions")

# The Dagster UI's asset partitions page (dagster-webserver 1.13's PartitionHealthQuery, copied from
# its bundle) plus the partitionStats the asset page asks for next to it.
PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
            }
          }
        }
      }
    }
  }
}
"""

# Readiness: the code location is loaded and knows the asset (nothing that builds a status cache).
READY_QUERY = (
    "query Ready($assetKey: AssetKeyInput!) { assetNodeOrError(assetKey: $assetKey) { ... on AssetNode { id } } }"
)


def note(message: str) -> None:
    print(f"[scale_dagster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def months_before(day: date, months: int) -> date:
    total = day.year * 12 + day.month - 1 - months
    return date(total // 12, total % 12 + 1, 1)


def connection_ids(n: int, prefix: str = "rutter-bench-connection") -> list[str]:
    return [str(uuid.uuid5(ID_NAMESPACE, f"{prefix}-{i}")) for i in range(n)]


def is_gap(i: int, j: int) -> bool:
    """The study's deterministic, scattered ~1 % of (connection, time partition) that failed."""
    return zlib.crc32(f"{i}:{j}".encode()) % 100 == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Tick labels to run under cProfile (--profile); their top functions go to stderr.
PROFILE: set[str] = set()


def timed(fn: Callable[[], Any], label: str = "") -> tuple[float, Any]:
    if label not in PROFILE:
        started = time.perf_counter()
        result = fn()
        return time.perf_counter() - started, result
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    result = profiler.runcall(fn)
    seconds = time.perf_counter() - started
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    note(f"profile of {label} ({seconds:.2f} s, under the profiler):\n{text.getvalue()}")
    return seconds, result


def main(argv: list[str] | None = None) -> int:
    # Fresh databases each run: their access tokens are stored encrypted, and a key of this run's own
    # will do (a warehouse of your own needs RUTTER_TOKEN_KEY; warehouse/tokens.py).
    from rutter_pipeline.warehouse.tokens import new_key

    os.environ.setdefault("RUTTER_TOKEN_KEY", new_key())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=100)
    parser.add_argument(
        "--months",
        type=int,
        default=24,
        help="history: RUTTER_HISTORY_START is the 1st of the month this many months ago",
    )
    parser.add_argument("--pg-url", help="a PostgreSQL server URL to use (default: start an embedded one)")
    parser.add_argument("--keep", action="store_true", help="keep the database bench_scale_<N>")
    parser.add_argument("--warm-repeats", type=int, default=3)
    parser.add_argument(
        "--profile", action="append", default=[], metavar="TICK", help="run this tick (its JSON key) under cProfile"
    )
    args = parser.parse_args(argv)
    PROFILE.update(args.profile)
    logging.basicConfig(level=logging.WARNING)

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        server = args.pg_url or start_embedded_postgres(work / "pg", persistent=False)
        if not args.pg_url:  # stopped before the temporary directory goes (see bench_backfill.py)
            stack.callback(stop_embedded_postgres, work / "pg")
        database = f"bench_scale_{args.connections}"
        drop_database(server, database)
        url = ensure_database(server, database)
        if not args.keep:
            stack.callback(drop_database, server, database)
        out = run(args, url, work, stack)
    print(json.dumps(out))
    return 0


def run(args: argparse.Namespace, url: str, work: Path, stack: ExitStack) -> dict[str, Any]:
    n = args.connections
    today = datetime.now(UTC).date()
    history_start = months_before(today.replace(day=1), args.months)
    sandbox = start_sandbox(n, stack)
    home = work / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ.update(
        {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": psycopg2_url(url),
            "WAREHOUSE_URL": url,
            "RUTTER_PIPELINE_COMPUTE_LOGS": str(work / "compute_logs"),
            "RUTTER_HISTORY_START": history_start.isoformat(),
            "RUTTER_BASE_URL": sandbox.base_url,
            "RUTTER_CLIENT_ID": sandbox.client_id,
            "RUTTER_CLIENT_SECRET": sandbox.client_secret,
            "RUTTER_MAX_REQUESTS_PER_10S": "1000000",
            "RUTTER_WEBHOOK_DEBOUNCE_SECONDS": "0",
            **dagster_env(),
        }
    )
    # Only now: the definitions read the environment when they are built.
    import dagster as dg

    from rutter_pipeline.definitions import build_definitions
    from rutter_pipeline.defs.partitions import ingest_partitions
    from rutter_pipeline.settings import Settings
    from rutter_pipeline.warehouse.migrations import migrate

    migrate(url)
    instance = stack.enter_context(dg.DagsterInstance.get())
    settings = Settings.from_env()
    partitions_def = ingest_partitions(settings)
    defs = build_definitions(settings)
    repo = defs.get_repository_def()
    asset_keys = sorted(
        (node.key for node in repo.asset_graph.asset_nodes if node.partitions_def is not None),
        key=lambda k: k.to_user_string(),
    )
    time_dim = next(
        d for d in partitions_def.partitions_defs if not isinstance(d.partitions_def, dg.DynamicPartitionsDefinition)
    )
    conn_dim = next(
        d for d in partitions_def.partitions_defs if isinstance(d.partitions_def, dg.DynamicPartitionsDefinition)
    )
    time_keys = time_dim.partitions_def.get_partition_keys()
    keys = connection_ids(n)
    out: dict[str, Any] = {
        "connections": n,
        "time_dimension": time_dim.name,
        "months": len(time_keys) if time_dim.name == "month" else args.months,
        "time_partitions": len(time_keys),
        "history_start": history_start.isoformat(),
        "partitioned_assets": len(asset_keys),
        "partitions_per_asset": n * len(time_keys),
    }
    note(f"{n} connections x {len(time_keys)} {time_dim.name} partitions x {len(asset_keys)} assets")

    add_s, _ = timed(lambda: instance.add_dynamic_partitions(conn_dim.partitions_def.name, keys))
    out["add_connections_s"] = round(add_s, 3)
    seed = seed_history(instance, asset_keys, keys, time_keys, conn_dim.name, time_dim.name)
    out.update(seed)
    out["load_log"] = seed_load_log(url, keys, history_start, today)
    register_live(url, keys)

    out["partitions_view"], out["rss_mb"] = partitions_view(
        instance, asset_keys, conn_dim.partitions_def.name, args.warm_repeats, work, stack
    )
    current = [dg.MultiPartitionKey({conn_dim.name: c, time_dim.name: time_keys[-1]}) for c in keys]
    out["ticks"] = ticks(instance, defs, repo, url, keys, current)
    out["rss_mb"]["bench_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


# --- 1. seeding ----------------------------------------------------------------------------------


def seed_history(instance, asset_keys, keys, time_keys, conn_name: str, time_name: str) -> dict[str, Any]:
    """A run's events for every (asset, partition): planned + materialized, ~1 % planned by a failed run.

    Materializations go through ``instance.handle_new_event`` with batch metadata (with
    ``DAGSTER_EVENT_BATCH_SIZE`` set, one multi-row INSERT per batch: dagster-postgres'
    ``store_event_batch``). That fast path takes materializations only; planned events would fall
    back to one INSERT each, so they are written with the storage's own batch statement
    (``prepare_insert_event_batch``) followed by what ``store_event_batch`` does after its INSERT,
    as the study did.
    """
    import dagster as dg
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

    batch_size = int(os.environ["DAGSTER_EVENT_BATCH_SIZE"])
    started = time.perf_counter()
    ok_runs = [str(uuid.uuid5(ID_NAMESPACE, f"history-run-{c}")) for c in keys]
    failed_runs = [str(uuid.uuid5(ID_NAMESPACE, f"failed-run-{c}")) for c in keys]
    gaps = {(i, j) for i in range(len(keys)) for j in range(len(time_keys)) if is_gap(i, j)}
    for i, c in enumerate(keys):
        instance.add_run(
            DagsterRun(
                job_name=HISTORY_JOB, run_id=ok_runs[i], status=DagsterRunStatus.SUCCESS, tags={"rutter/connection": c}
            )
        )
        if any((i, j) in gaps for j in range(len(time_keys))):
            instance.add_run(
                DagsterRun(
                    job_name=HISTORY_JOB,
                    run_id=failed_runs[i],
                    status=DagsterRunStatus.FAILURE,
                    tags={"rutter/connection": c},
                )
            )
    runs_s = time.perf_counter() - started

    partitions = [[dg.MultiPartitionKey({conn_name: c, time_name: t}) for t in time_keys] for c in keys]
    storage = instance.event_log_storage

    def write_planned(events: list[EventLogEntry]) -> None:
        statement = storage.prepare_insert_event_batch(events)
        with storage._connect() as conn:
            ids = [row[0] for row in conn.execute(statement.returning(SqlEventLogStorageTable.c.id)).fetchall()]
        with storage.index_transaction() as conn:
            storage._store_asset_event_tags(conn, events, ids)
            storage._store_asset_event(conn, events[-1], ids[-1])

    planned_n = materialized_n = 0
    for asset_key in asset_keys:
        step = "__".join(asset_key.path)
        cells = [(i, j) for i in range(len(keys)) for j in range(len(time_keys))]
        for start in range(0, len(cells), batch_size):
            chunk = cells[start : start + batch_size]
            planned = [
                log_entry(
                    failed_runs[i] if (i, j) in gaps else ok_runs[i],
                    HISTORY_JOB,
                    DagsterEvent(
                        event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
                        job_name=HISTORY_JOB,
                        step_key=step,
                        event_specific_data=AssetMaterializationPlannedData(asset_key, partition=str(partitions[i][j])),
                    ),
                )
                for i, j in chunk
            ]
            write_planned(planned)
            planned_n += len(planned)
            done = [(ok_runs[i], partitions[i][j]) for i, j in chunk if (i, j) not in gaps]
            write_materializations(instance, asset_key, done, HISTORY_JOB)
            materialized_n += len(done)
        note(f"seeded {asset_key.to_user_string()}: {planned_n + materialized_n:,} events so far")
    seconds = time.perf_counter() - started
    events = planned_n + materialized_n
    return {
        "seed_seconds": round(seconds, 1),
        "seed_events": events,
        "seed_events_per_s": round(events / (seconds - runs_s), 1),
        "seed_runs_s": round(runs_s, 2),
        "materialized_per_asset": materialized_n // max(1, len(asset_keys)),
        "failed_per_asset": len(gaps),
    }


def log_entry(run_id: str, job_name: str, event) -> Any:
    from dagster._core.events.log import EventLogEntry

    return EventLogEntry(
        error_info=None,
        level=logging.DEBUG,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        step_key=event.step_key,
        job_name=job_name,
        dagster_event=event,
    )


def write_materializations(instance, asset_key, items: list[tuple[str, Any]], job_name: str) -> None:
    """One materialization per (run id, MultiPartitionKey), as a run logs it (dimension tags, data
    version), through ``handle_new_event`` with batch metadata: one INSERT per DAGSTER_EVENT_BATCH_SIZE."""
    import dagster as dg
    from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key
    from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, DagsterEventType, StepMaterializationData

    step = "__".join(asset_key.path)
    batch_id = f"{step}:{uuid.uuid4().hex}"
    for k, (run_id, partition) in enumerate(items):
        tags = {**get_tags_from_multi_partition_key(partition), "dagster/data_version": uuid.uuid4().hex[:12]}
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name=job_name,
            step_key=step,
            event_specific_data=StepMaterializationData(
                dg.AssetMaterialization(asset_key, partition=str(partition), tags=tags)
            ),
        )
        instance.handle_new_event(
            log_entry(run_id, job_name, event),
            batch_metadata=DagsterEventBatchMetadata(batch_id, is_end=k == len(items) - 1),
        )


def seed_load_log(url: str, keys: list[str], history_start: date, today: date) -> dict[str, Any]:
    """N x 4 entities x every history day into rutter.load_log by COPY, when the table exists."""
    import psycopg

    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('rutter.load_log')").fetchone()[0] is None:  # type: ignore[index]
            note("rutter.load_log does not exist (migration 0005 not in this tree): coverage rows skipped")
            return {"skipped": "rutter.load_log does not exist"}
        days = [history_start + timedelta(days=d) for d in range((today - history_start).days)]
        started = time.perf_counter()
        now = datetime.now(UTC)
        rows = 0
        columns = "connection_id, entity, day, status, records, landed, rejected, run_id, error, loaded_at"
        with conn.cursor().copy(f"COPY rutter.load_log ({columns}) FROM STDIN") as copy:
            for i, c in enumerate(keys):
                run_id = str(uuid.uuid5(ID_NAMESPACE, f"history-run-{c}"))
                for entity in LOAD_LOG_ENTITIES:
                    for d, day in enumerate(days):
                        failed = is_gap(i, d)
                        copy.write_row(
                            (
                                c,
                                entity,
                                day,
                                "failed" if failed else "loaded",
                                0 if failed else 40,
                                0 if failed else 40,
                                0,
                                run_id,
                                "seeded failure" if failed else None,
                                now,
                            )
                        )
                        rows += 1
        seconds = time.perf_counter() - started
    note(f"rutter.load_log: {rows:,} rows in {seconds:.1f} s")
    return {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds)}


def register_live(url: str, keys: list[str], platform: str = "SHOPIFY") -> None:
    """The N connections live (state 'ready') in the warehouse registry, in one statement."""
    import psycopg

    from rutter_pipeline.warehouse.tokens import token_cipher

    cipher = token_cipher()  # tokens are stored encrypted (the table refuses clear text)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO rutter.connections (connection_id, token_ciphertext, platform, state, last_event_at) "
            "SELECT id, t, %s, 'ready', now() FROM unnest(%s::text[], %s::text[]) AS u(id, t)",
            (platform, keys, [cipher.encrypt(f"token-{k}") for k in keys]),
        )


# --- 2. partitions page ----------------------------------------------------------------------------


def partitions_view(instance, asset_keys, dynamic_name: str, repeats: int, work: Path, stack: ExitStack):
    port = free_port()
    log = stack.enter_context(open(work / "webserver.log", "wb"))  # noqa: SIM115 - closed by the stack
    started = time.perf_counter()
    web = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-m", "rutter_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(stop_tree, web.pid)
    base = f"http://127.0.0.1:{port}"
    session = stack.enter_context(requests.Session())

    def query(key, text: str = PARTITION_HEALTH_QUERY) -> tuple[float, int, dict]:
        t0 = time.perf_counter()
        response = session.post(
            f"{base}/graphql",
            json={"query": text, "variables": {"assetKey": {"path": list(key.path)}}},
            timeout=600,
        )
        seconds = time.perf_counter() - t0
        if response.status_code == 400:  # the query itself is wrong: no point waiting
            raise ValueError(f"HTTP 400 for {key.to_user_string()}: {response.text[:500]}")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} for {key.to_user_string()}: {response.text[:500]}")
        body = response.json()
        node = (body.get("data") or {}).get("assetNodeOrError") or {}
        if body.get("errors") or "message" in node:
            raise RuntimeError(f"GraphQL error for {key.to_user_string()}: {body.get('errors') or node['message']}")
        return seconds, len(response.content), node

    deadline = time.monotonic() + 180
    last_error: Exception | None = None
    while True:  # ready when the code location answers with the asset
        if web.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {web.returncode}; see {work / 'webserver.log'}")
        try:
            _, _, node = query(asset_keys[0], READY_QUERY)
            if node.get("id"):
                break
        except (requests.RequestException, RuntimeError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            tail = (work / "webserver.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dagster-webserver not ready after 180 s ({last_error!r}); its log ends:\n{tail}")
        time.sleep(0.5)
    ready_s = time.perf_counter() - started
    note(f"webserver ready in {ready_s:.1f} s")

    first, warm, cold, sizes, stats = {}, {}, {}, {}, {}
    for key in asset_keys:
        name = key.to_user_string()
        first[name], sizes[name], node = query(key)  # priming: builds and stores the status cache
        stats[name] = node.get("partitionStats")
        warm[name] = statistics.median(query(key)[0] for _ in range(repeats))
        note(f"{name}: first {first[name]:.2f} s, warm {warm[name]:.2f} s, {sizes[name]:,} bytes")
    instance.add_dynamic_partitions(dynamic_name, [str(uuid.uuid5(ID_NAMESPACE, "rutter-bench-new-connection"))])
    for key in asset_keys:
        name = key.to_user_string()
        cold[name] = query(key)[0]
        note(f"{name}: after a new connection {cold[name]:.2f} s")

    rss = {"webserver": vm_hwm_mb(web.pid)}
    children = psutil.Process(web.pid).children(recursive=True)
    if children:
        rss["code_server"] = max(vm_hwm_mb(child.pid) for child in children)
    stop_tree(web.pid)

    def summary(values: dict[str, float]) -> dict[str, float]:
        rounded = {k: round(v, 3) for k, v in values.items()}
        return {**rounded, "max": max(rounded.values())}

    view = {
        "webserver_ready_s": round(ready_s, 1),
        "first_s": summary(first),
        "warm_s": summary(warm),
        "after_new_connection_s": summary(cold),
        "bytes": {**sizes, "max": max(sizes.values())},
        "partition_stats": stats,
    }
    return view, rss


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for pid {pid}")


def stop_tree(pid: int, grace: float = 15) -> None:
    """Stop a process and the processes it started (the webserver's code server), by pid."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [parent, *parent.children(recursive=True)]
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        proc.kill()


# --- 3. sensor and schedule ticks ----------------------------------------------------------------


def start_sandbox(n: int, stack: ExitStack):
    """The local Rutter API with N ready connections, for connection_poll_sensor (it asks Rutter)."""
    import dataclasses

    from rutter_pipeline.sandbox import SandboxConfig, run_sandbox

    options: dict[str, Any] = {
        "client_id": "bench",
        "client_secret": "bench-secret",
        "connections": n,
        "orders_per_day": 1,
        "history_days": 1,
        "rate_limit_per_10s": 10_000_000,
        "uniform": True,  # no demo mix: the poll sensor only asks for statuses anyway
    }
    known = {f.name for f in dataclasses.fields(SandboxConfig)}
    config = SandboxConfig(**{k: v for k, v in options.items() if k in known})
    return stack.enter_context(run_sandbox(config, subprocess=True))


def ticks(instance, defs, repo, url: str, keys: list[str], current: list) -> dict[str, Any]:
    import psycopg
    from dagster._core.definitions.automation_condition_sensor_definition import AutomationConditionSensorDefinition
    from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorDefinition
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._grpc.impl import get_external_schedule_execution, get_external_sensor_execution

    from rutter_pipeline.connections.inbox import latest_event_id, store_event

    ref = instance.get_ref()
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="rutter_pipeline.definitions", working_directory=str(ROOT)),
        location_name="rutter_pipeline",
    )
    results: dict[str, Any] = {}

    def sensor_tick(name: str, cursor: str | None = None, label: str | None = None) -> Any:
        seconds, data = timed(
            lambda: get_external_sensor_execution(repo, origin, ref, name, None, None, cursor, None, None),
            label or name,
        )
        results[label or name] = tick_result(seconds, data)
        note(f"tick {label or name}: {results[label or name]}")
        return data

    def webhooks(events: list[tuple[str, str, str | None]]) -> None:
        with psycopg.connect(url) as conn:
            for code, connection_id, token in events:
                body = {
                    "type": code.split("_")[0],
                    "code": code,
                    "connection_id": connection_id,
                    "nonce": uuid.uuid4().hex,
                }
                store_event(
                    conn,
                    uuid.uuid4().hex,
                    event_type=body["type"],
                    code=code,
                    connection_id=connection_id,
                    payload=body,
                    access_token=token,
                )

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for schedule in defs.schedules:
        seconds, data = timed(
            lambda s=schedule: get_external_schedule_execution(repo, ref, s.name, now.timestamp(), "UTC", None),
            schedule.name,
        )
        results[schedule.name] = tick_result(seconds, data)
        note(f"tick {schedule.name}: {results[schedule.name]}")

    sensors = {s.name: s for s in defs.sensors}
    # data webhooks: one ORDER_UPDATED per connection; a first tick reads them, the one after the
    # debounce (0 s here) requests the syncs
    if "data_webhook_sensor" in sensors:
        webhooks([("ORDER_UPDATED", c, None) for c in keys])
        data = sensor_tick("data_webhook_sensor", None, "data_webhook_sensor:read")
        cursor = getattr(data, "cursor", None)
        if not getattr(data, "run_requests", None):
            sensor_tick("data_webhook_sensor", cursor)
        else:
            results["data_webhook_sensor"] = results["data_webhook_sensor:read"]
    # lifecycle: 50 INITIAL_UPDATEs of new connections (their tokens register them, pending)
    if "connection_lifecycle_sensor" in sensors:
        after = latest_event_id(url)
        new = connection_ids(LIFECYCLE_EVENTS, prefix="rutter-bench-onboarding")
        webhooks([("INITIAL_UPDATE", c, f"token-{c}") for c in new])
        sensor_tick("connection_lifecycle_sensor", str(after))
    for name, sensor in sensors.items():
        if isinstance(sensor, RunStatusSensorDefinition):  # first tick sets its cursor, the second is a steady one
            data = sensor_tick(name, None, f"{name}:first")
            sensor_tick(name, getattr(data, "cursor", None))
        elif isinstance(sensor, AutomationConditionSensorDefinition):
            results.update(automation_ticks(defs, instance, sensor, current))
    # poll: the sandbox holds N connections; the first tick onboards them all, the second is steady
    if "connection_poll_sensor" in sensors:
        data = sensor_tick("connection_poll_sensor", None, "connection_poll_sensor:onboarding")
        sensor_tick("connection_poll_sensor", getattr(data, "cursor", None))
    for name in [*sensors, *(s.name for s in defs.schedules)]:
        results.setdefault(name, {"seconds": None, "run_requests": None, "error": "not measured"})
    return results


def tick_result(seconds: float, data: Any) -> dict[str, Any]:
    error = getattr(data, "error", None)
    if error is not None:
        return {"seconds": round(seconds, 3), "run_requests": None, "error": error.message.strip()[-500:]}
    skip = getattr(data, "skip_message", None)
    out = {"seconds": round(seconds, 3), "run_requests": len(getattr(data, "run_requests", None) or [])}
    partitions = getattr(data, "dynamic_partitions_requests", None)
    if partitions:
        out["partitions_added"] = sum(len(r.partition_keys or []) for r in partitions)
    if skip:
        out["skip"] = skip
    return out


def automation_ticks(defs, instance, sensor, current: list) -> dict[str, Any]:
    """The automation sensor is evaluated by the daemon (``AssetDaemon``), not by the code server: time
    what the daemon runs for it, ``AutomationTickEvaluationContext(...).evaluate()`` (on the in-process
    asset graph instead of the workspace's). A first tick without a cursor; then what a daily load
    leaves behind (the ``current`` partition of every connection newly materialized, for each asset
    the sensor's assets depend on, by one SUCCESS run) and the tick after it, with the first's cursor."""
    from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
    from dagster._core.definitions.automation_condition_sensor_definition import EMIT_BACKFILLS_METADATA_KEY
    from dagster._core.definitions.automation_tick_evaluation_context import AutomationTickEvaluationContext
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    asset_graph = defs.resolve_asset_graph()
    metadata = sensor.metadata or {}
    out = {}
    cursor = AssetDaemonCursor.empty()
    targets = sensor.asset_selection.resolve(asset_graph)
    parents = sorted({p for key in targets for p in asset_graph.get(key).parent_keys} - targets, key=str)
    for label in (f"{sensor.name}:first", sensor.name):
        if label == sensor.name:
            run_id = str(uuid.uuid4())
            instance.add_run(DagsterRun(job_name="daily_load_job", run_id=run_id, status=DagsterRunStatus.SUCCESS))
            for parent in parents:
                write_materializations(instance, parent, [(run_id, p) for p in current], "daily_load_job")
            note(f"daily load: {len(current)} partitions of {', '.join(p.to_user_string() for p in parents)}")
        context = AutomationTickEvaluationContext(
            evaluation_id=cursor.evaluation_id + 1,
            instance=instance,
            asset_graph=asset_graph,
            cursor=cursor,
            materialize_run_tags={},
            observe_run_tags={},
            auto_observe_asset_keys=set(),
            asset_selection=sensor.asset_selection,
            logger=logging.getLogger("scale_dagster.automation"),
            emit_backfills=EMIT_BACKFILLS_METADATA_KEY in metadata,
            default_condition=sensor.default_condition,
        )
        seconds, (run_requests, cursor, _) = timed(context.evaluate, label)
        out[label] = {
            "seconds": round(seconds, 3),
            "run_requests": len(run_requests),
            "backfill_requests": sum(1 for r in run_requests if r.asset_graph_subset is not None),
        }
        note(f"tick {label}: {out[label]}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
