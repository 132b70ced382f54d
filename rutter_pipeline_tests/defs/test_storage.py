"""Dagster's storage as ``dagster.yaml`` configures it: dagster-postgres on a pooled engine.

The point of the pool is fewer PostgreSQL sessions per event, so that is what is counted: sessions the
server opened on the Dagster database (``pg_stat_database.sessions``) during the same range run on the
pooled storage and on dagster-postgres' stock storage.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from rutter_pipeline.defs.storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    instance_storage_config,
)
from rutter_pipeline.stack import dagster_yaml_source, psycopg2_url
from rutter_pipeline.warehouse.embedded import drop_database, ensure_database

DAYS = 40
days = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=days)
def daily(context) -> None:
    """One materialization per partition of the run's range, as the project's range runs log."""
    for key in context.partition_keys:
        context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, partition=key))


def _sessions(server_url: str, database: str) -> int:
    """Sessions the server has opened on ``database`` (read from another database, so not counting itself)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()
        return int(row[0])  # type: ignore[index]


def _range_run(storage: dict, home: Path) -> None:
    job = dg.define_asset_job("daily_job", selection=[daily])
    defs = dg.Definitions(assets=[daily], jobs=[job])
    last = days.get_partition_keys()[DAYS - 1]
    with dg.instance_for_test(overrides=storage, temp_dir=str(home)) as instance:
        result = defs.resolve_job_def("daily_job").execute_in_process(
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: "2026-01-01", ASSET_PARTITION_RANGE_END_TAG: last},
        )
        assert result.success
        status = instance.get_status_by_partition(daily.key, days.get_partition_keys()[:DAYS], days)
        assert len(status) == DAYS


def _settled_sessions(server_url: str, database: str, before: int) -> int:
    """Sessions opened since ``before``; a backend may report its session late, so wait until it stays."""
    previous, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _sessions(server_url, database) - before
        if now == previous:
            return now
        previous = now
        time.sleep(0.5)
    return previous


def test_a_range_run_uses_a_handful_of_sessions_where_stock_storage_opens_one_per_call(
    pg_server_url: str, tmp_path: Path
) -> None:
    opened = {}
    for kind in ("pooled", "stock"):
        name = f"dagster_{kind}_{uuid.uuid4().hex[:8]}"
        url = psycopg2_url(ensure_database(pg_server_url, name))
        try:
            stock = {"storage": {"postgres": {"postgres_url": url}}}
            storage = instance_storage_config(url) if kind == "pooled" else stock
            home = tmp_path / kind
            home.mkdir()
            _range_run(storage, home)  # creates the tables, so the run counted below opens only its own
            before = _settled_sessions(pg_server_url, name, 0)
            _range_run(storage, home)
            opened[kind] = _settled_sessions(pg_server_url, name, before)
        finally:
            drop_database(pg_server_url, name)
    # stock: two or three sessions per planned event and per materialization (329 measured)
    assert opened["stock"] > 2 * DAYS, opened
    # pooled: the two kept open, plus the instance's set-up (table checks, schedule storage): 9 measured
    assert opened["pooled"] <= 15, opened


def test_dagster_yaml_configures_the_pooled_storage(dagster_pg_url: str, tmp_path: Path, monkeypatch) -> None:
    shutil.copyfile(dagster_yaml_source(), tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(dagster_pg_url))
    monkeypatch.setenv("RUTTER_PIPELINE_COMPUTE_LOGS", str(tmp_path / "logs"))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert instance.event_log_storage.postgres_url == psycopg2_url(dagster_pg_url)
        # what tests and benchmarks build in code is what the file says
        config = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
        expected = instance_storage_config("URL")
        for section in ("run_storage", "event_log_storage", "schedule_storage"):
            assert {k: v for k, v in config[section].items() if k != "config"} == {
                k: v for k, v in expected[section].items() if k != "config"
            }
            assert config[section]["config"] == {"postgres_url": {"env": "DAGSTER_PG_URL"}}
        # the run worker rebuilds the instance from its ref: it must get the pooled classes too
        ref = instance.get_ref()
        assert ref.event_storage_data.class_name == "PooledPostgresEventLogStorage"  # type: ignore[union-attr]
        assert ref.run_storage_data.class_name == "PooledPostgresRunStorage"  # type: ignore[union-attr]


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(dagster_pg_url: str) -> None:
    storage = PooledPostgresEventLogStorage(psycopg2_url(dagster_pg_url))
    try:

        def backend_pid() -> int:
            with storage._connect() as conn:
                return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()

        parent = backend_pid()
        assert backend_pid() == parent  # the pool keeps it
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                os.write(write, str(backend_pid()).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(child, 0)
        reported = os.read(read, 64).decode()
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert reported and int(reported) != parent
        assert backend_pid() == parent  # the parent's session survived the child
    finally:
        storage.dispose()


def test_callers_beyond_the_pool_get_connections_of_their_own_without_waiting(dagster_pg_url: str) -> None:
    """The daemon's threads may all use the storage at once: the pool must not make them queue."""
    storage = PooledPostgresEventLogStorage(psycopg2_url(dagster_pg_url))
    callers = 16  # well beyond the two kept
    together = threading.Barrier(callers, timeout=20)
    pids: list[int] = []
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with storage._connect() as conn:
                pids.append(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                together.wait()  # every caller holds its connection at the same moment
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=hold) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(set(pids)) == callers
        assert storage._engine.pool.checkedin() == 2  # the overflow ones were closed on return
    finally:
        storage.dispose()


@pytest.mark.parametrize("cls", [PooledPostgresEventLogStorage, PooledPostgresRunStorage])
def test_dispose_closes_the_pooled_connection(cls, dagster_pg_url: str) -> None:
    storage = cls(psycopg2_url(dagster_pg_url))
    with storage._engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert storage._engine.pool.checkedin() == 1  # kept open
    storage.dispose()
    assert storage._engine.pool.checkedin() == 0
