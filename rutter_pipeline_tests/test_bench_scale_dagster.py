"""benchmarks/scale_dagster.py at 3 connections and 3 months of history: every figure it promises is there.

The figures are not judged (that is what the full-size runs are for); what is checked is that each
part ran against the real thing: the seeded history is what the partitions page reports, every
sensor and schedule was evaluated without an error, and the benchmark leaves no database and no
process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
N = 3


def leftover_processes(tmp: Path) -> list[str]:
    """Processes of the benchmark's instance under ``tmp`` (its webserver and code server carry its DAGSTER_HOME).

    Only this test's: a benchmark running meanwhile on the same machine is not touched.
    """
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("DAGSTER_HOME", "").startswith(str(tmp)) and proc.pid != os.getpid():
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
                proc.kill()
    return found


def test_scale_benchmark_reports_every_figure(pg_server_url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/scale_dagster.py",
            "--connections",
            str(N),
            "--months",
            "3",
            "--warm-repeats",
            "1",
            "--pg-url",
            pg_server_url,
        ],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # its working folder (DAGSTER_HOME) goes under tmp_path
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    print(json.dumps(out, indent=1))

    assert out["connections"] == N
    if out["time_dimension"] == "month":  # 3 months back from this month's 1st, and this month
        assert out["months"] == out["time_partitions"] == 4
    assert out["partitions_per_asset"] == N * out["time_partitions"]
    assets = out["partitioned_assets"]
    # Every month x connection asset of the definitions (landing, warehouse, the partitioned marts).
    assert assets == len(partitioned_asset_keys())
    gaps = out["failed_per_asset"]
    assert out["materialized_per_asset"] == out["partitions_per_asset"] - gaps
    assert out["seed_events"] == assets * (2 * out["partitions_per_asset"] - gaps)
    assert out["seed_seconds"] > 0 and out["seed_events_per_s"] > 0
    if "skipped" not in out["load_log"]:
        assert out["load_log"]["rows"] > 0

    view = out["partitions_view"]
    for figure in ("warm_s", "after_new_connection_s", "bytes"):
        assert len(view[figure]) == assets + 1 and all(v > 0 for v in view[figure].values()), figure
    # the page shows what was seeded: planned-but-never-materialized partitions of failed runs as failed
    for stats in view["partition_stats"].values():
        assert stats["numPartitions"] == out["partitions_per_asset"]
        assert stats["numMaterialized"] == out["materialized_per_asset"]
        assert stats["numFailed"] == gaps
    assert out["rss_mb"]["webserver"] > 50 and out["rss_mb"]["code_server"] > 50

    ticks = out["ticks"]
    for name in (
        "connection_lifecycle_sensor",
        "data_webhook_sensor",
        "connection_poll_sensor",
        "run_failure_alert_sensor",
        "marts_automation_sensor",
        "daily_ingest_schedule",
        "incremental_sync_schedule",
    ):
        assert name in ticks, name
    for name, tick in ticks.items():
        assert "error" not in tick and tick["seconds"] > 0 and tick["run_requests"] >= 0, (name, tick)
    # what the benchmark set up reached the sensors: 50 onboarding webhooks, one data webhook per
    # connection, N live connections for the schedules, N connections at the Rutter sandbox
    assert ticks["connection_lifecycle_sensor"]["run_requests"] > 0
    assert 0 < ticks["connection_lifecycle_sensor"].get("partitions_added", 0) <= 50
    assert ticks["data_webhook_sensor"]["run_requests"] >= 1
    assert ticks["daily_ingest_schedule"]["run_requests"] >= 1
    assert ticks["incremental_sync_schedule"]["run_requests"] >= 1
    assert ticks["connection_poll_sensor:onboarding"].get("partitions_added") == N
    # the daily load the benchmark logs before the automation sensor's second tick makes the marts stale
    assert ticks["marts_automation_sensor"]["run_requests"] >= 1

    with psycopg.connect(pg_server_url) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = %s", (f"bench_scale_{N}",)).fetchall()
    assert left == []
    assert leftover_processes(tmp_path) == []


def partitioned_asset_keys() -> set:
    from rutter_pipeline.definitions import build_definitions
    from rutter_pipeline.settings import Settings

    graph = build_definitions(Settings()).resolve_asset_graph()
    return {key for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None}
