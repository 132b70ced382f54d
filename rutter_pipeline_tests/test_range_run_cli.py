"""The README's range run from the command line works as written: ``dagster job execute`` with the range
tags loads every day of the range; ``dagster asset materialize --partition-range`` refuses these assets
(which is why the README documents the former)."""

import json
import subprocess
from datetime import timedelta

import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline_tests.fixtures.cli import Cli
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_range_run_from_the_command_line(pipeline: Pipeline, cli: Cli) -> None:
    cid = pipeline.connection_id
    first = (pipeline.today.replace(day=1) - timedelta(days=1)).replace(day=1)  # last month
    start, end = f"{cid}|{first.isoformat()}", f"{cid}|{pipeline.today.replace(day=1).isoformat()}"
    tags = {
        "dagster/asset_partition_range_start": start,
        "dagster/asset_partition_range_end": end,
        "rutter/connection": cid,
        "rutter/days": f"{first.isoformat()}..{pipeline.today.isoformat()}",
    }
    done = cli.run(
        "dagster", "job", "execute", "-m", "rutter_pipeline.definitions", "-j", "ingest_job", "--tags", json.dumps(tags)
    )
    assert "RUN_SUCCESS" in done.stdout + done.stderr
    assert pipeline.stored(ORDERS, first, pipeline.today) == pipeline.truth(ORDERS, first, pipeline.today)

    refused = subprocess.run(
        cli.command(
            "dagster",
            "asset",
            "materialize",
            "-m",
            "rutter_pipeline.definitions",
            "--select",
            "landing/orders,warehouse/orders",
            "--partition-range",
            f"{start}...{end}",
        ),
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # Dagster asks for BackfillPolicy.single_run() there; these assets have multi-run policies (six months)
    assert refused.returncode != 0 and "BackfillPolicy.single_run" in refused.stderr
