"""Run workers killed with SIGKILL at each stage of a load, and two runs of one partition at once:
``rutter.*`` holds every day either as before or as the ground truth, never between, and a re-run
converges to exactly the ground truth.

The killed runs are real ``dagster`` processes (``dagster asset materialize`` / ``dagster job
execute``) killed with their whole process group; the re-runs are in-process Dagster runs against
the same warehouse. Where the issue-19 process cases live:

- SIGKILL during the fetch (every Rutter response held back, the landing's transaction open and
  empty) and during the landing's COPY (rows already streamed into it):
  ``test_a_run_killed_during_fetch_or_copy_leaves_landing_and_warehouse_as_they_were``;
- SIGKILL during the merge: of an asset run, ``defs/test_killed_run.py``; of a merge process on its
  own, ``warehouse/test_merge_failures.py``; of a chunked range merge, every day before or after,
  ``warehouse/test_merge_chunks.py``; of a batched daily load (another code path: ``batch.py``),
  ``test_a_daily_batch_killed_during_its_merge_leaves_every_day_before_or_after`` (here);
- two runs of the same partition at once: ``test_two_runs_of_one_partition_at_once_store_it_once``;
- the daemon's side (a killed run marked failed, its slot freed, retried): the "ops" tests in this
  folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import date, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from rutter_pipeline.defs.batches import daily_run_config
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter.limiter import close_shared_limiters
from rutter_pipeline_tests.fixtures.cli import Cli
from rutter_pipeline_tests.fixtures.merge_kill import line_items_locked, poll
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.conftest import Tally, other_connection, run_assets, table_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WAREHOUSE = ("rutter.orders", "rutter.order_line_items")
LANDING = ("landing.orders", "landing.batches")
COPY_ORDERS_PER_DAY = 400
COPY_PROGRESS = """
SELECT tuples_processed FROM pg_stat_progress_copy p
WHERE p.relid = 'landing.orders'::regclass AND p.datname = current_database()
"""


def month_days(pipeline: Pipeline) -> tuple[date, date]:
    """The days of the current month partition up to yesterday: what a month run loads, give or take today."""
    return pipeline.today.replace(day=1), pipeline.today - timedelta(days=1)


def loaded_then_changed(pipeline: Pipeline, instance_factory) -> dict[date, list[dict]]:
    """Load the month (through today), then let Rutter move on two days: every later load has new
    versions to write. Returns what is stored per day before the faulty run."""
    instance = instance_factory([pipeline.connection_id])
    first, last = pipeline.today.replace(day=1), pipeline.today
    assert run_assets(pipeline, instance, [ORDERS], first, last).success
    before = {d: pipeline.stored(ORDERS, d) for d in _days(first, last)}
    pipeline.sandbox.control.advance(2 * 24 * 60)
    assert any(pipeline.truth(ORDERS, d) != before[d] for d in before), "nothing changed: the case proves nothing"
    return before


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the run's process and every child it started
    assert proc.wait(timeout=30) == -signal.SIGKILL


def backends_gone(url: str) -> None:
    """Wait until PostgreSQL has ended the killed run's sessions (and rolled their transactions back)."""
    # The test's own in-process runs share the org's rate limit through this database: their idle
    # pooled sessions are not the killed run's, so they are closed first, not waited for.
    close_shared_limiters()
    with psycopg.connect(url, autocommit=True) as watcher:
        poll(
            "the killed run's sessions to end",
            lambda: (
                watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()[0]
                == 0
            ),
        )


def rerun_converges(pipeline: Pipeline, instance_factory, tally: Tally) -> None:
    instance = instance_factory([pipeline.connection_id])
    first, last = pipeline.today.replace(day=1), pipeline.today
    assert run_assets(pipeline, instance, [ORDERS], first, last).success
    tally.converged(pipeline, [ORDERS], first, last)


@pytest.mark.parametrize("stage", ["fetch", "copy"])
def test_a_run_killed_during_fetch_or_copy_leaves_landing_and_warehouse_as_they_were(
    stage: str, pipeline: Pipeline, cli: Cli, instance_factory, tally: Tally
) -> None:
    if stage == "copy":  # records are landed in chunks of 5,000: a merchant big enough for two
        pipeline = other_connection(pipeline, orders_per_day=COPY_ORDERS_PER_DAY, history_days=20)
        cli.run("rutter-pipeline", "connections", "add", pipeline.connection_id, "--access-token",
                pipeline.access_token, "--platform", "SHOPIFY")  # fmt: skip
    loaded_then_changed(pipeline, instance_factory)
    warehouse, landing = table_rows(pipeline.warehouse_url, *WAREHOUSE), table_rows(pipeline.warehouse_url, *LANDING)
    if stage == "fetch":  # Rutter holds every answer back: the run waits with its landing open and empty
        pipeline.sandbox.control.set_faults(rate_slow=1.0, slow_seconds=8)
    else:  # slow pages: the first chunk is in the COPY while the rest is still being fetched
        pipeline.sandbox.control.set_faults(delay_seconds=1.0)

    proc = cli.popen("dagster", *cli.materialize_args("landing/orders,warehouse/orders", pipeline.partition(
        pipeline.today)))  # fmt: skip
    try:
        with psycopg.connect(pipeline.warehouse_url, autocommit=True) as watcher:

            def copying() -> bool:
                row = watcher.execute(COPY_PROGRESS).fetchone()
                return row is not None and (row[0] > 0 if stage == "copy" else True)

            poll(f"the run to reach its {stage}", copying, timeout=180)
            if stage == "fetch":
                assert watcher.execute(COPY_PROGRESS).fetchone()[0] == 0, "rows arrived: this is no longer the fetch"
            kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    tally.sandbox_faults(pipeline.sandbox)
    tally.faults(1)  # the SIGKILL
    backends_gone(pipeline.warehouse_url)
    assert table_rows(pipeline.warehouse_url, *LANDING) == landing, "the killed landing left rows behind"
    assert table_rows(pipeline.warehouse_url, *WAREHOUSE) == warehouse

    rerun_converges(pipeline, instance_factory, tally)


def test_a_daily_batch_killed_during_its_merge_leaves_every_day_before_or_after(
    pipeline: Pipeline, cli: Cli, instance_factory, tmp_path: Path, tally: Tally
) -> None:
    before = loaded_then_changed(pipeline, instance_factory)
    first, last = month_days(pipeline)
    config = tmp_path / "daily.yaml"
    config.write_bytes(orjson.dumps(daily_run_config([pipeline.connection_id], first, last)))
    with line_items_locked(pipeline.warehouse_url) as kill_mid_merge:
        proc = cli.popen("dagster", "job", "execute", "-m", "rutter_pipeline.definitions", "-j", "daily_load_job",
                         "-c", str(config))  # fmt: skip
        try:
            kill_mid_merge(lambda: kill(proc))
        finally:
            if proc.poll() is None:
                proc.kill()
    tally.faults(1)
    backends_gone(pipeline.warehouse_url)
    for day in _days(first, last):  # no day half-merged: each is as it was, or fully the new truth
        stored = pipeline.stored(ORDERS, day)
        assert stored in (before[day], pipeline.truth(ORDERS, day)), f"{day} is half-merged"

    rerun_converges(pipeline, instance_factory, tally)


def test_two_runs_of_one_partition_at_once_store_it_once(
    pipeline: Pipeline, cli: Cli, instance_factory, tally: Tally
) -> None:
    loaded_then_changed(pipeline, instance_factory)
    args = cli.materialize_args("landing/orders,warehouse/orders", pipeline.partition(pipeline.today))
    procs = [cli.popen("dagster", *args) for _ in range(2)]
    outputs = [proc.communicate(timeout=300)[0].decode(errors="replace") for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    tally.faults(1)  # the second run, racing the first

    first, last = month_days(pipeline)
    tally.converged(pipeline, [ORDERS], first, last)
    with psycopg.connect(pipeline.warehouse_url) as conn:
        landed, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT record->>'id') FROM landing.orders WHERE connection_id = %s",
            (pipeline.connection_id,),
        ).fetchone()
    assert landed == distinct, "two landings of one partition interleaved"
