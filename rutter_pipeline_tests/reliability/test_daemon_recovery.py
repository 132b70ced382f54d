"""Runs that fail or die under the real ``dagster-daemon`` recover by themselves (dagster.yaml):

- a run failing from a transient cause (Rutter answering 5xx beyond the client's retries, then
  healthy) is retried by the daemon after its backoff, and the retry converges;
- a run whose worker is SIGKILLed is marked failed within seconds, its connection's run slot (tag
  concurrency) goes to the next queued run of that connection, and its retry converges.

Each ends with the warehouse compared against the sandbox's ground truth.
"""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from rutter_pipeline.entities import ENTITIES
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.daemon_stack import daemon_stack

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
DELAY = 3  # RUTTER_RUN_RETRY_DELAY_SECONDS where the backoff is not under test
# Where it is: longer than the queue and launch take by themselves (a few seconds), so that only the
# backoff can explain the wait.
BACKOFF = 15


def month_of(pipeline: Pipeline, months_back: int) -> tuple:
    first = pipeline.today.replace(day=1)
    for _ in range(months_back):
        first = (first - timedelta(days=1)).replace(day=1)
    last = min(pipeline.today, (first + timedelta(days=32)).replace(day=1) - timedelta(days=1))
    return max(first, pipeline.history_start), last


def assert_converged(pipeline: Pipeline, start, end) -> int:
    """Every entity of [start, end] equals the ground truth; the number of records compared."""
    compared = 0
    for spec in ENTITIES.values():
        truth = pipeline.truth(spec, start, end)
        assert pipeline.stored(spec, start, end) == truth, f"{spec.name} {start}..{end} differs from the truth"
        compared += len(truth)
    assert compared > 0
    return compared


def test_a_run_failing_on_an_upstream_outage_is_retried_after_its_backoff_and_converges(
    pipeline: Pipeline, dagster_pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    start, end = month_of(pipeline, 1)
    overrides = {"RUTTER_RUN_RETRY_DELAY_SECONDS": str(BACKOFF)}
    with daemon_stack(pipeline, dagster_pg_url, tmp_path, monkeypatch, **overrides) as stack:
        pipeline.sandbox.control.set_faults(rate_5xx=1.0, endpoints=["/orders"])  # an orders outage
        # The client gives up after 2 quick attempts instead of 8 over about a minute (the launchpad's
        # knobs): the same failure, sooner. The secrets stay environment references.
        fast_client = {
            "client_id": {"env": "RUTTER_CLIENT_ID"},
            "client_secret": {"env": "RUTTER_CLIENT_SECRET"},
            "max_attempts": 2,
            "backoff_initial_s": 0.1,
        }
        first = stack.launch_range(
            pipeline.connection_id, start, end, {"resources": {"rutter": {"config": fast_client}}}
        )
        failed = stack.wait(first, FINISHED, timeout=300)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        pipeline.sandbox.control.clear_faults()  # Rutter is healthy again

        retry_id = stack.retry_of(first)
        retry = stack.wait(retry_id, FINISHED, timeout=300)
        assert retry.status == dg.DagsterRunStatus.SUCCESS, stack.messages(retry_id)[-5:]
        # the retry is the same range run of the same connection (its slot, its range)
        for tag in ("rutter/connection", "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"):
            assert retry.tags[tag] == failed.tags[tag]
        assert retry.tags["dagster/retry_number"] == "1"
        assert stack.run(first).tags.get("dagster/will_retry") == "true"  # so the alert sensor stays quiet
        # the retry waited out its backoff before its first step
        assert any("backoff" in m for m in stack.messages(retry_id))
        created = stack.instance.get_run_record_by_id(retry_id).create_timestamp.timestamp()
        first_step = min(e.timestamp for e in stack.instance.all_logs(retry_id, of_type=dg.DagsterEventType.STEP_START))
        assert first_step - created >= BACKOFF
        assert_converged(pipeline, start, end)


def test_a_killed_run_is_failed_frees_its_connection_slot_and_its_retry_converges(
    pipeline: Pipeline, dagster_pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    older, newer = month_of(pipeline, 2), month_of(pipeline, 1)
    # Small pages and slow answers: the first run is still fetching when it is killed.
    overrides = {"RUTTER_RUN_RETRY_DELAY_SECONDS": str(DELAY), "RUTTER_PAGE_LIMIT": "20"}
    with daemon_stack(pipeline, dagster_pg_url, tmp_path, monkeypatch, **overrides) as stack:
        pipeline.sandbox.control.set_faults(delay_seconds=0.3)
        victim = stack.launch_range(pipeline.connection_id, *newer)
        stack.wait(victim, {dg.DagsterRunStatus.STARTED}, timeout=180)
        waiting = stack.launch_range(pipeline.connection_id, *older)  # same connection: waits for the slot
        pid = stack.worker_pid(victim)
        deadline = time.monotonic() + 120
        while not stack.step_started(victim, "landing"):
            assert time.monotonic() < deadline, "the run never reached its landing step"
            time.sleep(0.1)
        time.sleep(1.0)  # inside the fetch
        assert stack.run(waiting).status == dg.DagsterRunStatus.QUEUED, "one run at a time per connection"

        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        pipeline.sandbox.control.clear_faults()

        dead = stack.wait(victim, FINISHED, timeout=120)
        marked_failed = time.monotonic() - killed_at
        assert dead.status == dg.DagsterRunStatus.FAILURE
        assert marked_failed < 60, f"the killed run was marked failed after {marked_failed:.1f}s"
        stack.wait(waiting, {dg.DagsterRunStatus.STARTED, *FINISHED}, timeout=120)
        slot_freed = time.monotonic() - killed_at
        assert stack.wait(waiting, FINISHED, timeout=300).status == dg.DagsterRunStatus.SUCCESS

        retry = stack.wait(stack.retry_of(victim), FINISHED, timeout=300)
        assert retry.status == dg.DagsterRunStatus.SUCCESS, stack.messages(retry.run_id)[-5:]
        compared = assert_converged(pipeline, older[0], newer[1])
        print(
            f"killed run marked failed {marked_failed:.1f}s after SIGKILL; the connection's queued run started "
            f"{slot_freed:.1f}s after; {compared} records compared"
        )
