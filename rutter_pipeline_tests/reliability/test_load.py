"""Load (issue 19, process faults): many connections' last 30 days backfilled at once, under the run
limits of the project's ``dagster.yaml`` (the real ``dagster-daemon``'s run queue) and the org rate limit
in its default form, the request log shared through the warehouse PostgreSQL by every run process.

Every connection's days must equal the sandbox's ground truth. The case runs 10 connections (about a
minute or two on 2 cores); ``benchmarks/bench_load_backfill.py`` runs it at 50 (``RUTTER_LOAD_CONNECTIONS``)
and ``benchmarks/RESULTS.md`` has its figures.
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.entities import ENTITIES
from rutter_pipeline.rutter.rate_buckets import PG_SCHEMA
from rutter_pipeline_tests.fixtures.daemon import launch_backfill
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.conftest import Tally
from rutter_pipeline_tests.reliability.daemon_stack import ROOT, daemon_stack

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONNECTIONS = int(os.environ.get("RUTTER_LOAD_CONNECTIONS", "10"))
DAYS = 30
ORDERS_PER_DAY = 3  # small merchants: the case is about many runs at once, not about volume


def max_concurrent_runs() -> int:
    """``max_concurrent_runs`` of the repository's dagster.yaml (what the daemon under test reads)."""
    import yaml

    return yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]["max_concurrent_runs"]


def overlap(records: list[dg.RunRecord]) -> int:
    """The most runs that were in progress at one moment, from their start and end times."""
    edges = sorted(
        [(r.start_time, 1) for r in records if r.start_time] + [(r.end_time, -1) for r in records if r.end_time]
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_many_connections_backfilled_at_once_under_the_run_limits_and_the_shared_rate_limit_equal_the_truth(
    pipeline: Pipeline, dagster_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Tally
) -> None:
    # The default limiter: the org's request log in the warehouse PostgreSQL, shared by every run process.
    monkeypatch.delenv("RUTTER_RATE_LIMIT_URL", raising=False)
    conns = pipeline.sandbox.control.create_connections(CONNECTIONS, orders_per_day=ORDERS_PER_DAY, history_days=DAYS)
    registry = ConnectionRegistry(pipeline.warehouse_url)
    for conn in conns:
        registry.add(conn["connection_id"], conn["access_token"], platform=conn["platform"])
    ids = [c["connection_id"] for c in conns]
    start, end = pipeline.today - timedelta(days=DAYS), pipeline.today - timedelta(days=1)
    months = sorted({(start + timedelta(days=n)).replace(day=1) for n in range(DAYS)})
    keys = [f"{cid}|{month.isoformat()}" for cid in ids for month in months]
    assets = [[layer, name] for name in ENTITIES for layer in ("landing", "warehouse")]

    began = time.monotonic()
    with daemon_stack(pipeline, dagster_pg_url, tmp_path, monkeypatch) as stack:
        stack.instance.add_dynamic_partitions("connections", ids)
        backfill_id = launch_backfill(stack.context, assets, keys)
        deadline = time.monotonic() + 900
        while (backfill := stack.instance.get_backfill(backfill_id)).status == BulkActionStatus.REQUESTED:
            assert stack.daemon.poll() is None, f"dagster-daemon exited; see {stack.home / 'daemon.log'}"
            assert time.monotonic() < deadline, f"backfill still running after 900 s: {backfill.status}"
            time.sleep(1.0)
        records = stack.instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, [
            (r.dagster_run.run_id, r.dagster_run.status) for r in records
        ]
    elapsed = time.monotonic() - began
    limit = max_concurrent_runs()
    most = overlap(records)
    assert 1 < most <= limit, f"{most} runs at once; dagster.yaml allows {limit}"
    with psycopg.connect(pipeline.warehouse_url) as conn:  # the runs took their requests from the shared log
        (tables,) = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (PG_SCHEMA,)
        ).fetchone()
    assert tables >= 1, f"no request log in the warehouse's {PG_SCHEMA} schema: the runs did not share the limit"

    for cid in ids:
        tally.converged(dataclasses.replace(pipeline, connection_id=cid), ENTITIES.values(), start, end)
    print(
        f"load: {CONNECTIONS} connections x {DAYS} days, {len(keys)} partitions in {len(records)} runs, "
        f"at most {most} at once (limit {limit}), {elapsed:.0f} s, {tally.records_compared} records compared"
    )
