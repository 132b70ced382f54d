"""A flaky Rutter, through the real pipeline: each fault of issue 19's "upstream" list is injected by
the sandbox while the ingest assets run (landing, schema check, merge), and the warehouse must end
equal to the sandbox's ground truth: no record lost, doubled or stale.

Where the issue-19 upstream cases live:

- 30% 429s with and without Retry-After, 5xx bursts, responses slower than the client timeout,
  truncated JSON, dropped connections, a cursor that fails mid-stream, a record repeated across a
  page boundary: ``test_upstream_fault_is_ridden_out_and_the_warehouse_equals_the_truth`` (here).
  The client alone under the same faults: ``rutter/test_sandbox_faults.py``; what each fault looks
  like on the wire: ``sandbox/test_faults.py``.
- A cursor that keeps failing beyond the retries: the run fails, no day is reported or merged from
  the first pages, a re-run converges (dlt #4428): ``test_a_cursor_failing_for_good_fails_the_run_...``.
- A record updated between two pages of the same window: ``test_records_updated_between_pages_...``
  (an incremental sync paging by ``updated_at`` while the clock moves an hour a page: nothing is
  lost behind the watermark, the next sync brings every changed order to its newest version).
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from rutter_pipeline.defs.batches import incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.resources import resources_from_settings
from rutter_pipeline.entities import ORDERS, TRANSACTIONS
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.conftest import Tally, run_assets

pytestmark = pytest.mark.postgres

ENTITIES = (ORDERS, TRANSACTIONS)
# Small pages: a day of a dozen orders becomes a dozen requests, enough for a 30% rate to hit often.
PAGE_LIMIT = 3


@pytest.fixture
def small_pages(pipeline: Pipeline) -> None:
    pipeline.configure(page_limit=PAGE_LIMIT)


# The client's retry policy as deployed, with a shorter first backoff so that the suite stays quick.
FAST = {"backoff_initial_s": 0.05}
CASES = {
    "429": ({"rate_429": 0.3}, FAST),
    # Retry-After is honoured as given, whatever the backoff: the deployed policy
    "429-retry-after": ({"rate_429": 0.3, "retry_after_seconds": 0.2}, None),
    "5xx-bursts": ({"rate_5xx": 0.2, "burst_5xx": 4}, FAST),
    # a response held back 1.5 s against a read timeout of 0.5 s: the client gives up on it and asks again
    "slower-than-timeout": ({"rate_slow": 0.3, "slow_seconds": 1.5}, FAST | {"read_timeout_s": 0.5}),
    "truncated-json": ({"rate_truncate": 0.3}, FAST),
    "dropped-connections": ({"rate_drop": 0.3}, FAST),
    "cursor-fails-mid-stream": ({"cursor_failures": 4}, FAST),
    "record-repeated-across-pages": ({"repeat_boundary": True}, None),
    "all-at-once": (
        {"rate_429": 0.08, "rate_5xx": 0.08, "rate_truncate": 0.08, "rate_drop": 0.08, "repeat_boundary": True},
        FAST,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_upstream_fault_is_ridden_out_and_the_warehouse_equals_the_truth(
    case: str, pipeline: Pipeline, instance_factory, small_pages: None, tally: Tally
) -> None:
    faults, rutter_config = CASES[case]
    instance = instance_factory([pipeline.connection_id])
    start, end = pipeline.today - timedelta(days=3), pipeline.today - timedelta(days=2)
    pipeline.sandbox.control.set_faults(seed=19, **faults)

    result = run_assets(pipeline, instance, ENTITIES, start, end, rutter_config=rutter_config)

    injected = tally.sandbox_faults(pipeline.sandbox)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert injected >= 3, f"only {injected} faults injected: the case would prove little"
    tally.converged(pipeline, ENTITIES, start, end)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert all(checks.values()), checks
    assert {f"{s.name}_{check}" for s in ENTITIES for check in ("schema", "loaded")} <= checks.keys()


def load_log(url: str, connection_id: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT entity, day, status FROM rutter.load_log WHERE connection_id = %s ORDER BY 1, 2", (connection_id,)
        ).fetchall()


def test_a_cursor_failing_for_good_fails_the_run_and_merges_nothing_then_a_rerun_converges(
    pipeline: Pipeline, instance_factory, small_pages: None, tally: Tally
) -> None:
    """The first page of each window comes, every later one fails: the run must fail, not report the
    first pages as the day (dlt #4428), and the warehouse keeps none of them."""
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=4)
    pipeline.sandbox.control.set_faults(cursor_failures=10_000)

    failed = run_assets(pipeline, instance, [ORDERS], day, rutter_config={"max_attempts": 2})

    injected = tally.sandbox_faults(pipeline.sandbox)
    assert not failed.success and injected >= 2
    assert pipeline.stored(ORDERS, day) == []
    assert [r[2] for r in load_log(pipeline.warehouse_url, pipeline.connection_id)] in ([], ["failed"])
    landed = [m for m in failed.get_asset_materialization_events()]
    assert landed == [], "a failed fetch must not be reported as a materialization"

    assert run_assets(pipeline, instance, [ORDERS], day).success
    tally.converged(pipeline, [ORDERS], day)


def test_records_updated_between_pages_of_one_window_are_stored_at_their_newest(
    pipeline: Pipeline, instance_factory, small_pages: None, tally: Tally
) -> None:
    """The clock moves after every page: orders get paid, fulfilled and refunded while the first load
    pages through their days by ``created_at`` and while a sync pages through them by ``updated_at``.
    None may be lost behind the watermark those set (dlt #2269, tap-shopify #197): the next sync
    brings every one to its newest version."""
    instance = instance_factory([pipeline.connection_id])
    start, end = pipeline.today - timedelta(days=3), pipeline.today - timedelta(days=1)
    pipeline.sandbox.control.set_faults(advance_minutes_per_page=30)
    assert run_assets(pipeline, instance, [ORDERS], start, end).success
    assert tally.sandbox_faults(pipeline.sandbox) >= 3
    pipeline.sandbox.control.advance(6 * 60)
    before = pipeline.truth(ORDERS, start, end)

    pipeline.sandbox.control.set_faults(advance_minutes_per_page=60)
    sync = incremental_sync_job.execute_in_process(
        run_config=incremental_run_config([pipeline.connection_id], ["orders"]),
        instance=instance,
        resources=resources_from_settings(pipeline.settings),
        raise_on_error=False,
    )
    steps = tally.sandbox_faults(pipeline.sandbox)
    assert sync.success, [e.message for e in sync.all_events if e.is_failure]
    assert steps >= 3
    # Orders changed while the sync paged (Rutter's answer for the days is not what it was when the
    # sync started): one changed after it was read moves further on in updated_at order and may come
    # again (the newer version wins); one changed after the last page is past the new watermark, so
    # the next sync finds it.
    assert pipeline.truth(ORDERS, start, end) != before, "no order changed while the sync paged"
    # what the sync could not see yet (changed after its last page) comes with the next one
    again = incremental_sync_job.execute_in_process(
        run_config=incremental_run_config([pipeline.connection_id], ["orders"]),
        instance=instance,
        resources=resources_from_settings(pipeline.settings),
        raise_on_error=False,
    )
    assert again.success
    tally.converged(pipeline, [ORDERS], start, end)
