"""A Dagster run SIGKILLed in the middle of its merge leaves the warehouse as it was; a re-run
completes it exactly (docs/architecture.md §5.3)."""

import os
import signal
from datetime import timedelta

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline_tests.fixtures.cli import Cli
from rutter_pipeline_tests.fixtures.merge_kill import line_items_locked
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def snapshot(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT to_jsonb(o)::text FROM rutter.orders o UNION ALL "
                "SELECT to_jsonb(li)::text FROM rutter.order_line_items li ORDER BY 1"
            )
        ]


def test_run_killed_during_merge_leaves_warehouse_unchanged_and_rerun_completes(pipeline: Pipeline, cli: Cli) -> None:
    day = pipeline.today - timedelta(days=1)
    partition = pipeline.partition(day)
    cli.run("dagster", *cli.materialize_args("landing/orders,warehouse/orders", partition))
    first = pipeline.truth(ORDERS, day)
    assert pipeline.stored(ORDERS, day) == first

    pipeline.sandbox.control.advance(3 * 24 * 60)  # orders get fulfilled and refunded: new versions
    second = pipeline.truth(ORDERS, day)
    assert second != first
    cli.run("dagster", *cli.materialize_args("landing/orders", partition))
    before = snapshot(pipeline.warehouse_url)

    with line_items_locked(pipeline.warehouse_url) as kill_mid_merge:
        proc = cli.popen("dagster", *cli.materialize_args("warehouse/orders", partition))
        try:

            def kill() -> None:
                os.killpg(proc.pid, signal.SIGKILL)  # the run's process and any child it started
                assert proc.wait(timeout=10) == -signal.SIGKILL

            kill_mid_merge(kill)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert snapshot(pipeline.warehouse_url) == before
    assert pipeline.stored(ORDERS, day) == first

    cli.run("dagster", *cli.materialize_args("warehouse/orders", partition))
    assert pipeline.stored(ORDERS, day) == second
