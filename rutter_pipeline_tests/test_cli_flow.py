"""The command-line flow of the README: register a connection, materialize a partition with the
plain ``dagster`` CLI, and find the sandbox's records in the warehouse (run twice: nothing changes).
"""

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline_tests.fixtures.cli import Cli
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_connections_add_then_dagster_asset_materialize(pipeline: Pipeline, cli: Cli, tmp_path: Path) -> None:
    listed = cli.run("rutter-pipeline", "connections", "list")
    assert pipeline.connection_id in listed.stdout and pipeline.access_token not in listed.stdout
    assert cli.env["DAGSTER_HOME"] == str(tmp_path / "state" / "dagster_home")

    day = pipeline.today - timedelta(days=2)
    materialize = cli.materialize_args("landing/orders,warehouse/orders", pipeline.partition(day))
    first = cli.run("dagster", *materialize)
    assert pipeline.stored(ORDERS, day) == pipeline.truth(ORDERS, day)
    for secret in (pipeline.access_token, pipeline.sandbox.client_secret):
        assert secret not in first.stdout + first.stderr

    with psycopg.connect(pipeline.warehouse_url) as conn:
        before = conn.execute("SELECT _loaded_at, id FROM rutter.orders ORDER BY id").fetchall()
    cli.run("dagster", *materialize)
    with psycopg.connect(pipeline.warehouse_url) as conn:
        assert conn.execute("SELECT _loaded_at, id FROM rutter.orders ORDER BY id").fetchall() == before
