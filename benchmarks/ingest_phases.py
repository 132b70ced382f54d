"""The measured phases of bench_ingest.py; each runs in a fresh child process of its own.

A fresh process per phase makes peak RSS a property of that phase alone (``ru_maxrss`` never goes
down) and keeps imports, caches and allocator state of one tool from helping or hurting another.
The parent passes a JSON job on the command line and reads one JSON result from the last line of
stdout. Only the work is timed: imports, database creation and the Dagster instance come first.

    python benchmarks/ingest_phases.py '{"phase": "raw_fetch", ...}'
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import orjson

USER_AGENT = "bench-ingest/raw"


def _peak_rss_mb() -> float:
    """Peak RSS of this process or of any child it waited for (dlt may fork workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _timed(result: dict[str, Any]) -> Iterator[None]:
    cpu, wall = _cpu_s(), time.perf_counter()
    yield
    result["seconds"] = time.perf_counter() - wall
    result["cpu_s"] = _cpu_s() - cpu


def iter_pages(job: dict[str, Any]) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Every page of the connection's orders in the window: plain requests + orjson, one cursor stream.

    The least a fetcher can do (no retries, no window checks, no threads), so it is the ceiling
    for any fetcher in this process.
    """
    import requests

    session = requests.Session()
    session.auth = (job["client_id"], job["client_secret"])
    session.headers.update({"X-Rutter-Version": "2023-03-14", "User-Agent": USER_AGENT})
    params: dict[str, Any] = {
        "access_token": job["access_token"],
        "limit": job["limit"],
        "created_at_min": job["start_ms"],
        "created_at_max": job["end_ms"],
    }
    cursor = None
    try:
        while True:
            response = session.get(
                job["base_url"] + "/orders", params=params if cursor is None else {**params, "cursor": cursor}
            )
            if response.status_code != 200:
                raise RuntimeError(f"GET /orders answered {response.status_code}: {response.text[:200]}")
            payload = orjson.loads(response.content)
            yield payload["orders"], len(response.content)
            cursor = payload["next_cursor"]
            if cursor is None:
                return
    finally:
        session.close()


def raw_fetch(job: dict[str, Any]) -> dict[str, Any]:
    """(a) HTTP and JSON parse only; with ``spill`` set, also writes every record as one JSON line."""
    result: dict[str, Any] = {"orders": 0, "api_calls": 0, "bytes": 0}
    ids: set[str] = set()
    spill = open(job["spill"], "wb") if job.get("spill") else None  # noqa: SIM115 - closed below
    try:
        with _timed(result):
            for records, nbytes in iter_pages(job):
                result["orders"] += len(records)
                result["api_calls"] += 1
                result["bytes"] += nbytes
                if spill is not None:
                    ids.update(r["id"] for r in records)
                    spill.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
    finally:
        if spill is not None:
            spill.close()
    if spill is not None:
        result["distinct"] = len(ids)
    return result


def raw_copy(job: dict[str, Any]) -> dict[str, Any]:
    """(b) COPY the fetched records (one JSON line each) into a bare ``jsonb`` table, one transaction.

    No parsing, validation or typing in Python: the least a loader into PostgreSQL can do with the
    records, so it is the ceiling for any loader of the same rows on this server.
    """
    import psycopg

    result: dict[str, Any] = {"orders": 0}
    with psycopg.connect(job["pg_url"]) as conn:
        conn.execute("CREATE TABLE raw_orders (connection_id text, record jsonb)")
        conn.commit()
        head = job["connection_id"].encode() + b"\t"
        with _timed(result), open(job["spill"], "rb") as lines:
            with conn.cursor().copy("COPY raw_orders (connection_id, record) FROM STDIN") as copy:
                while chunk := lines.readlines(8 << 20):
                    result["orders"] += len(chunk)
                    copy.write(b"".join(head + line.replace(b"\\", b"\\\\") for line in chunk))
            conn.commit()
        result["stored"] = conn.execute("SELECT count(*) FROM raw_orders").fetchone()[0]  # type: ignore[index]
    return result


def project(job: dict[str, Any]) -> dict[str, Any]:
    """(c) This project through Dagster: one range run of ``landing/orders`` and ``warehouse/orders``."""
    os.environ.update(
        {
            "RUTTER_BASE_URL": job["base_url"],
            "RUTTER_CLIENT_ID": job["client_id"],
            "RUTTER_CLIENT_SECRET": job["client_secret"],
            "WAREHOUSE_URL": job["pg_url"],
            "RUTTER_HISTORY_START": job["history_start"],
            "RUTTER_MAX_REQUESTS_PER_10S": "1000000",
        }
    )
    import dagster as dg
    import psycopg

    from rutter_pipeline.connections.registry import ConnectionRegistry
    from rutter_pipeline.definitions import build_definitions
    from rutter_pipeline.defs.ingest import landing_key, warehouse_key
    from rutter_pipeline.defs.partitions import range_tags
    from rutter_pipeline.defs.storage import instance_storage_config
    from rutter_pipeline.entities import ORDERS
    from rutter_pipeline.settings import Settings
    from rutter_pipeline.stack import dagster_env, psycopg2_url
    from rutter_pipeline.warehouse.embedded import drop_database, ensure_database
    from rutter_pipeline.warehouse.migrations import migrate

    migrate(job["pg_url"])
    ConnectionRegistry(job["pg_url"]).add(job["connection_id"], job["access_token"], platform="SHOPIFY")

    # The instance the project runs on (dagster.yaml, `rutter-pipeline dev`): PostgreSQL storage, here
    # a database of its own on the same server, and the stack's event batch size.
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = dagster_env()["DAGSTER_EVENT_BATCH_SIZE"]
    dagster_db = f"bench_dagster_{os.getpid()}"
    storage = instance_storage_config(psycopg2_url(ensure_database(job["pg_url"], dagster_db)))
    result: dict[str, Any] = {}
    # Dropped however the run ends: with --pg-url the server outlives the benchmark.
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-dagster-") as home,
            dg.instance_for_test(temp_dir=home, overrides=storage) as instance,
        ):
            instance.add_dynamic_partitions("connections", [job["connection_id"]])
            job_def = build_definitions(Settings.from_env()).resolve_implicit_global_asset_job_def()
            tags = range_tags(
                job["connection_id"], date.fromisoformat(job["first_day"]), date.fromisoformat(job["last_day"])
            )
            with _timed(result):
                run = job_def.execute_in_process(
                    instance=instance,
                    tags=tags,
                    asset_selection=[landing_key(ORDERS), warehouse_key(ORDERS)],
                    raise_on_error=False,
                )
            result["success"] = run.success
            if not run.success:
                result["error"] = "; ".join(
                    str(e.event_specific_data.error.message)  # type: ignore[union-attr]
                    for e in run.all_events
                    if e.is_step_failure
                )[:2000]
            steps = {
                e.step_key: e.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
                for e in run.all_events
                if e.event_type_value == "STEP_SUCCESS"
            }
            result["step_seconds"] = steps
            # Where the run's time went outside the steps (run start, event writes, resource set-up).
            stamps = [
                (entry.timestamp, entry.dagster_event.event_type_value, entry.step_key)
                for entry in instance.all_logs(run.run_id)
                if entry.dagster_event is not None
            ]
            first = stamps[0][0]
            result["timeline"] = [
                (round(t - first, 2), kind, step) for t, kind, step in stamps if "STEP" in kind or "RUN" in kind
            ]
            landing_meta = [
                m.metadata
                for e in run.all_events
                if e.event_type_value == "ASSET_MATERIALIZATION"
                for m in [e.event_specific_data.materialization]  # type: ignore[union-attr]
                if m.asset_key == landing_key(ORDERS)
            ]
            if landing_meta:
                result["api_calls"] = int(landing_meta[0]["range/api_calls"].value)  # the run's total
    finally:
        drop_database(job["pg_url"], dagster_db)
    with psycopg.connect(job["pg_url"]) as conn:
        result["stored"] = conn.execute(
            "SELECT count(*) FROM rutter.orders WHERE connection_id = %s", (job["connection_id"],)
        ).fetchone()[0]  # type: ignore[index]
        result["line_items"] = conn.execute(
            "SELECT count(*) FROM rutter.order_line_items WHERE connection_id = %s", (job["connection_id"],)
        ).fetchone()[0]  # type: ignore[index]
    result["orders"] = result["stored"]
    return result


def dlt_rest_api(job: dict[str, Any]) -> dict[str, Any]:
    """(d) dlt's ``rest_api`` source into the same PostgreSQL, configured as its docs suggest.

    Cursor pagination on ``next_cursor``, merge on ``id``, line items as dlt's default nested
    table (``orders__line_items``), dlt's default loader file format for PostgreSQL unless the
    job names one. dlt's own working directory is a temporary one, so every run starts clean.
    """
    import dlt
    import psycopg
    from dlt.sources.rest_api import rest_api_source

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dlt-") as work:
        source = rest_api_source(
            {
                "client": {
                    "base_url": job["base_url"],
                    "auth": {"type": "http_basic", "username": job["client_id"], "password": job["client_secret"]},
                    "headers": {"X-Rutter-Version": "2023-03-14"},
                    "paginator": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
                },
                "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
                "resources": [
                    {
                        "name": "orders",
                        "endpoint": {
                            "path": "orders",
                            "data_selector": "orders",
                            "params": {
                                "access_token": job["access_token"],
                                "limit": job["limit"],
                                "created_at_min": job["start_ms"],
                                "created_at_max": job["end_ms"],
                            },
                        },
                    }
                ],
            }
        )
        pipeline = dlt.pipeline(
            pipeline_name="bench_rutter_orders",
            pipelines_dir=work,
            destination=dlt.destinations.postgres(credentials=_dlt_credentials(job["pg_url"])),
            dataset_name="dlt_rutter",
        )
        kwargs = {"loader_file_format": job["dlt_file_format"]} if job.get("dlt_file_format") else {}
        with _timed(result):
            info = pipeline.run(source, **kwargs)
        result["success"] = not info.has_failed_jobs
        steps = pipeline.last_trace.steps if pipeline.last_trace else []
        result["step_seconds"] = {
            s.step: (s.finished_at - s.started_at).total_seconds() for s in steps if s.finished_at and s.started_at
        }
    with psycopg.connect(job["pg_url"]) as conn:
        result["stored"] = conn.execute("SELECT count(*) FROM dlt_rutter.orders").fetchone()[0]  # type: ignore[index]
        result["line_items"] = conn.execute("SELECT count(*) FROM dlt_rutter.orders__line_items").fetchone()[0]  # type: ignore[index]
    result["orders"] = result["stored"]
    return result


def _dlt_credentials(url: str) -> str:
    """A URL dlt accepts: it insists on a host name, so a socket directory goes into the query."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    host = str(info.get("host") or "localhost")
    user, password = quote(str(info.get("user") or "postgres")), quote(str(info.get("password") or ""))
    netloc = f"{user}:{password}@" + (f"localhost:{info.get('port') or 5432}" if host.startswith("/") else host)
    query = f"?host={quote(host)}" if host.startswith("/") else ""
    return f"postgresql://{netloc}/{info['dbname']}{query}"


PHASES = {"raw_fetch": raw_fetch, "raw_copy": raw_copy, "project": project, "dlt": dlt_rest_api}


def main(argv: list[str]) -> int:
    # Fresh databases each run: their access tokens are stored encrypted, and a key of this run's own
    # will do (a warehouse of your own needs RUTTER_TOKEN_KEY; warehouse/tokens.py).
    from rutter_pipeline.warehouse.tokens import new_key

    os.environ.setdefault("RUTTER_TOKEN_KEY", new_key())
    job = orjson.loads(argv[1])
    result = PHASES[job["phase"]](job)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    sys.stdout.flush()
    print("\n" + orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
