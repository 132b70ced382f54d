"""The Dagster daemon killed and started again during a backfill (issue 19, process faults).

A connection's history is backfilled as the UI launches it (GraphQL ``launchPartitionBackfill``), one
month per run so that the backfill is several runs queued under ``dagster.yaml``'s limits. While its
runs are in progress (some started, some still waiting), the ``dagster-daemon`` gets SIGTERM and, two
seconds later if it still runs, SIGKILL; then a new daemon starts on the same instance. The backfill
must complete by itself, and every partition must equal the sandbox's ground truth with no record
stored twice.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from rutter_pipeline.entities import ENTITIES
from rutter_pipeline_tests.fixtures.daemon import launch_backfill
from rutter_pipeline_tests.fixtures.merge_kill import poll
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.conftest import Tally
from rutter_pipeline_tests.reliability.daemon_stack import daemon_stack

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_daemon_killed_during_a_backfill_and_started_again_completes_it_and_stores_each_record_once(
    pipeline: Pipeline, dagster_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Tally
) -> None:
    start, end = pipeline.history_start, pipeline.today - timedelta(days=1)
    keys = sorted({pipeline.partition(start + timedelta(days=n)) for n in range((end - start).days + 1)})
    assert len(keys) >= 4, keys
    assets = [[layer, name] for name in ENTITIES for layer in ("landing", "warehouse")]
    overrides = {"RUTTER_BACKFILL_MONTHS_PER_RUN": "1", "RUTTER_RUN_RETRY_DELAY_SECONDS": "3"}
    with daemon_stack(pipeline, dagster_pg_url, tmp_path, monkeypatch, **overrides) as stack:
        pipeline.sandbox.control.set_faults(delay_seconds=0.2)  # slow answers: the runs overlap the kill
        backfill_id = launch_backfill(stack.context, assets, keys)

        def runs() -> list[dg.DagsterRun]:
            return stack.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))

        def in_progress() -> bool:
            now = runs()
            started = [r for r in now if r.status == dg.DagsterRunStatus.STARTED]
            return bool(started) and len(now) == len(keys) and not all(r.is_finished for r in now)

        poll("the backfill's runs to be submitted and one to start", in_progress, timeout=300)
        before_kill = {r.run_id: r.status.value for r in runs()}
        stack.kill_daemon(grace=2.0)
        tally.faults(1)
        time.sleep(3.0)  # down for a moment: the runs it launched go on, or die, without it
        pipeline.sandbox.control.clear_faults()
        stack.start_daemon()

        deadline = time.monotonic() + 480
        while (backfill := stack.instance.get_backfill(backfill_id)).status == BulkActionStatus.REQUESTED:
            assert stack.daemon.poll() is None, f"the new daemon exited; see {stack.home / 'daemon.log'}"
            assert time.monotonic() < deadline, (
                f"backfill still {backfill.status}: {[(r.run_id, r.status) for r in runs()]}"
            )
            time.sleep(1.0)
        final = {r.run_id: (r.status.value, r.tags.get("dagster/retry_number")) for r in runs()}
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, before_kill, final)
        assert len(before_kill) == len(keys), before_kill  # one run per month, as submitted before the kill
        # Every month's partitions materialized once the backfill is done.
        for path in assets:
            assert stack.instance.get_materialized_partitions(dg.AssetKey(path)) >= set(keys), path
        print(f"runs at the kill: {before_kill}; at the end: {final}")
    tally.converged(pipeline, ENTITIES.values(), start, pipeline.today)
