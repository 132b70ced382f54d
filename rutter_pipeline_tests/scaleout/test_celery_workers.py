"""Steps on Celery workers fed by RabbitMQ: a backfill through the celery executor, one worker killed.

Real parts only: RabbitMQ (the machine's service) as broker, two ``dagster-celery worker start``
processes started here, a Dagster instance on PostgreSQL storage whose runs are launched as
subprocesses by Dagster's default run launcher (as the daemon launches them), the sandbox over HTTP
and a PostgreSQL warehouse. Each test run uses a queue of its own, so parallel runs on one broker
never take each other's steps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import kombu
import psycopg
import pytest
from cryptography.fernet import Fernet
from dagster import EventLogEntry, RunsFilter
from dagster._serdes import deserialize_value, serialize_value
from dagster_graphql.test.utils import execute_dagster_graphql

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.batches import daily_run_config
from rutter_pipeline.defs.executors import BROKER_ENV, EXECUTOR_ENV, QUEUE_ENV
from rutter_pipeline.defs.partitions import month_end
from rutter_pipeline.entities import ENTITIES
from rutter_pipeline.sandbox import SandboxConfig, SandboxHandle
from rutter_pipeline.sandbox.config import FaultSettings
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline_tests.fixtures.daemon import launch_backfill, run_backfill_until_done, wait_for_runs, workspace
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BROKER_URL = os.environ.get("TEST_RABBITMQ_URL", "pyamqp://guest:guest@127.0.0.1:5672//")
CONNECTIONS = 5
DAYS = 30
# Each /orders response waits this long, so that landing/orders steps take seconds: the landing steps
# of both runs then want the `rutter_api` pool at once, with all four worker processes alive.
ORDERS_DELAY_S = 0.15
WORKER_CONCURRENCY = 2
POOL_SLOTS = 2
# The worker is killed inside a merge (a kill between steps would prove less): its transaction is open,
# and the merge takes the connection and entity's advisory lock, which the redelivered step then needs.
KILLED_STEP = "warehouse__orders"
DAGSTER_CELERY = str(Path(sys.executable).with_name("dagster-celery"))


@pytest.fixture
def broker_url() -> str:
    """The RabbitMQ broker: CI must have it (the test fails saying so); elsewhere the test is skipped."""
    try:
        with kombu.Connection(BROKER_URL, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # any reason the broker cannot be used is the same answer
        where = BROKER_URL.split("@")[-1]  # host and vhost, not the credentials
        message = f"RabbitMQ is not reachable at {where} ({type(exc).__name__}: {exc}); start rabbitmq-server"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {message}", pytrace=False)
        pytest.skip(message)
    return BROKER_URL


@dataclass
class Worker:
    name: str  # Celery node name, as the step's engine event reports it ("<name>@<host>")
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a machine that dies would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def start_worker(name: str, queue: str, env: dict[str, str], folder: Path) -> Worker:
    """``dagster-celery worker start`` as the README says, in a process group of its own."""
    log = folder / f"{name}.log"
    command = [
        DAGSTER_CELERY, "worker", "start", "-A", "rutter_pipeline.defs.celery_app", "-q", queue, "-n", name,
        "--", f"--concurrency={WORKER_CONCURRENCY}",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Worker(f"{name}@{socket.gethostname()}", process, log)


def wait_until_ready(workers: list[Worker], timeout: float = 90) -> None:
    """Each worker logs 'ready' once it consumes from the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker {worker.name} exited: {worker.log.read_text()[-3000:]}")
        if all(" ready." in w.log.read_text(errors="replace") for w in workers):
            return
        time.sleep(0.2)
    raise AssertionError(f"workers not ready after {timeout}s: {[w.log.read_text()[-2000:] for w in workers]}")


@pytest.fixture
def celery_workers(
    broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, str]], list[Worker]]]:
    """Start two workers on a queue of this test's own; the test's runs use the celery executor on it."""
    queue = f"rutter-test-{uuid.uuid4().hex[:12]}"
    for name, value in {EXECUTOR_ENV: "celery", BROKER_ENV: broker_url, QUEUE_ENV: queue}.items():
        monkeypatch.setenv(name, value)
    started: list[Worker] = []

    def start(env: dict[str, str]) -> list[Worker]:
        tag = queue.rsplit("-", 1)[-1]
        for i in (1, 2):
            # The CLI wants a DAGSTER_HOME (one per machine: two CLIs creating one would race); the steps
            # use the instance of the run that sent them.
            home = tmp_path / f"worker{i}_home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            # The CLI runs `celery` from PATH: the one installed next to it.
            path = os.pathsep.join([str(Path(DAGSTER_CELERY).parent), os.environ.get("PATH", "")])
            worker_env = {**os.environ, **env, "DAGSTER_HOME": str(home), "PATH": path}
            started.append(start_worker(f"w{i}-{tag}", queue, worker_env, tmp_path))
        wait_until_ready(started)
        return started

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.kill()
        with kombu.Connection(broker_url, connect_timeout=5) as conn:  # leave no queue behind on the broker
            kombu.Queue(queue, channel=conn.default_channel).delete()


LAUNCH_RUN = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack }
  ... on RunConfigValidationInvalid { errors { message } } } }
"""


def launch_job(context, job: str, run_config: dict) -> str:
    """Launch a run of ``job`` as the UI's launchpad does (GraphQL ``launchRun``)."""
    result = execute_dagster_graphql(
        context.create_request_context(),
        LAUNCH_RUN,
        {"p": {"selector": {"repositoryLocationName": "rutter_pipeline", "repositoryName": "__repository__",
                            "jobName": job}, "runConfigData": run_config}},
    )  # fmt: skip
    payload = result.data["launchRun"]
    assert payload["__typename"] == "LaunchRunSuccess", payload
    return payload["run"]["runId"]


STEP_ON_WORKER = """
SELECT run_id, step_key, event FROM event_logs
WHERE dagster_event_type = 'ENGINE_EVENT' AND step_key IS NOT NULL AND event LIKE '%%in celery worker%%'
ORDER BY id
"""
STEP_DONE = """
SELECT 1 FROM event_logs WHERE run_id = %s AND step_key = %s AND dagster_event_type IN ('STEP_SUCCESS', 'STEP_FAILURE')
"""


def worker_of(event_json: str) -> str:
    """The Celery node an 'Executing steps ... in celery worker' engine event names."""
    entry = deserialize_value(event_json, EventLogEntry)
    return entry.dagster_event.engine_event_data.metadata["Celery worker"].text


STEPS_STARTED = "SELECT DISTINCT run_id, step_key FROM event_logs WHERE dagster_event_type = 'STEP_START'"
LANDING_SPANS = """
SELECT run_id, step_key, min(timestamp) FILTER (WHERE dagster_event_type = 'STEP_START'),
       max(timestamp) FILTER (WHERE dagster_event_type = 'STEP_SUCCESS')
FROM event_logs WHERE step_key LIKE 'landing\\_\\_%%' GROUP BY run_id, step_key
"""


def most_landing_steps_at_once(dagster_url: str) -> int:
    """The most landing steps (of any run) that were between their first start and their success at once."""
    with psycopg.connect(dagster_url) as conn:
        spans = [(start, end) for _, _, start, end in conn.execute(LANDING_SPANS)]
    assert spans and all(start and end for start, end in spans), spans
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def steps_on_workers(dagster_url: str) -> list[tuple[str, str, str]]:
    """(run_id, step_key, worker) for every step a worker started, in order."""
    with psycopg.connect(dagster_url) as conn:
        return [(run_id, step, worker_of(event)) for run_id, step, event in conn.execute(STEP_ON_WORKER)]


def kill_mid_step(dagster_url: str, workers: list[Worker], step_key: str, found: list, stop: threading.Event) -> None:
    """Wait until a worker is inside a step ``step_key`` of some run, then SIGKILL it; note run, step, worker."""
    by_name = {w.name: w for w in workers}
    with psycopg.connect(dagster_url, autocommit=True) as conn:
        while not stop.is_set():
            for run_id, step, worker in steps_on_workers(dagster_url):
                if step == step_key and conn.execute(STEP_DONE, (run_id, step)).fetchone() is None:
                    by_name[worker].kill()
                    found.append((run_id, step, by_name[worker]))
                    return
            time.sleep(0.05)


def test_a_backfill_on_two_celery_workers_survives_a_killed_worker(
    sandbox_factory: Callable[[SandboxConfig], SandboxHandle],
    pg_url: str,
    dagster_pg_url: str,
    pg_instance_factory,
    broker_url: str,
    celery_workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """5 connections x 30 days through the celery executor; one worker SIGKILLed inside a merge.

    What makes it converge is Celery's late acknowledgement (``task_acks_late``): the killed worker's
    step was never acknowledged, RabbitMQ hands it to the other worker when the dead one's connection
    closes, and that worker runs the step again in the same run (once PostgreSQL has rolled back the
    dead merge and freed its advisory lock). The merge is idempotent, so the second execution leaves
    the same rows. No Dagster step retry or run
    re-execution is involved: the run that lost a worker succeeds on its own.
    """
    sandbox = sandbox_factory(
        SandboxConfig(
            now=SANDBOX_NOW, seed=1, connections=0, rate_limit_per_10s=100_000,
            faults=FaultSettings(delay_seconds=ORDERS_DELAY_S, endpoints=["/orders"]),
        )
    )  # fmt: skip
    connections = sandbox.control.create_connections(CONNECTIONS, orders_per_day=12, history_days=DAYS)
    today = sandbox.control.now().date()
    history_start = today - timedelta(days=DAYS)
    env = {
        "RUTTER_BASE_URL": sandbox.base_url,
        "RUTTER_CLIENT_ID": sandbox.client_id,
        "RUTTER_CLIENT_SECRET": sandbox.client_secret,
        "WAREHOUSE_URL": pg_url,
        "RUTTER_HISTORY_START": history_start.isoformat(),
        "RUTTER_MAX_REQUESTS_PER_10S": "5000",
        # Access tokens are stored encrypted: every process (runs and workers) needs the same key.
        "RUTTER_TOKEN_KEY": Fernet.generate_key().decode(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    migrate(pg_url)
    registry = ConnectionRegistry(pg_url)
    for conn in connections:
        registry.add(conn["connection_id"], conn["access_token"], platform=conn["platform"])
    ids = [c["connection_id"] for c in connections]

    workers = celery_workers(env)
    # The repository's dagster.yaml gives the `rutter_api` pool (the landing steps) 2 slots.
    instance = pg_instance_factory(ids, concurrency={"pools": {"default_limit": POOL_SLOTS}})
    months = sorted({(history_start + timedelta(days=n)).replace(day=1) for n in range(DAYS + 1)})
    keys = [f"{cid}|{month.isoformat()}" for cid in ids for month in months]
    assets = [[layer, name] for name in ENTITIES for layer in ("landing", "warehouse")]

    killed: list[tuple[str, str, Worker]] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_mid_step, args=(dagster_pg_url, workers, KILLED_STEP, killed, stop))
    killer.start()
    try:
        with workspace(instance) as context:
            backfill_id = launch_backfill(context, assets, keys)
            status = run_backfill_until_done(context, backfill_id, timeout=240)
            # Then a batched job: yesterday's daily load of the five, on the worker left.
            daily_id = launch_job(context, "daily_load_job", daily_run_config(ids, today - timedelta(days=1)))
            (daily,) = wait_for_runs(instance, [daily_id])
    finally:
        stop.set()
        killer.join(timeout=30)

    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert status == "COMPLETED_SUCCESS", [(r.run_id, r.status) for r in runs]
    assert runs and all(r.is_success for r in runs), [(r.run_id, r.status) for r in runs]

    # The kill landed inside a step, and that same step of that same run was then run by the other worker.
    assert killed, f"no worker was seen inside {KILLED_STEP}: {steps_on_workers(dagster_pg_url)}"
    run_id, step, victim = killed[0]
    (survivor,) = [w for w in workers if w is not victim]
    executions = [worker for r, s, worker in steps_on_workers(dagster_pg_url) if (r, s) == (run_id, step)]
    assert executions[0] == victim.name and survivor.name in executions[1:], executions
    # The batched daily load ran its one step on the worker left.
    assert daily.is_success, daily.status
    assert [w for r, _, w in steps_on_workers(dagster_pg_url) if r == daily_id] == [survivor.name]
    # The pool held across runs and workers: the run's process claims a slot before it sends a landing
    # step (2 runs x 4 landing steps on 4 worker processes: without the pool, 4 ran at once).
    assert most_landing_steps_at_once(dagster_pg_url) <= POOL_SLOTS
    # Every step of every run ran on a Celery worker, none in the run's own process.
    on_workers = {(r, s) for r, s, _ in steps_on_workers(dagster_pg_url)}
    with psycopg.connect(dagster_pg_url) as conn:
        started = set(conn.execute(STEPS_STARTED))
    assert on_workers == started and len(started) >= len(runs) * len(assets), sorted(started ^ on_workers)

    # The warehouse equals the sandbox's ground truth: nothing lost, nothing doubled.
    last = month_end(today)
    for conn in connections:
        settings = Settings.from_env(env)
        view = Pipeline(sandbox, pg_url, conn["connection_id"], conn["access_token"], today, env, settings)
        for spec in ENTITIES.values():
            stored, truth = view.stored(spec, history_start, last), view.truth(spec, history_start, last)
            assert truth, f"{spec.name} of {conn['connection_id']}: the sandbox served nothing"
            assert stored == truth, f"{spec.name} of {conn['connection_id']}: {len(stored)} stored, {len(truth)} served"
    with psycopg.connect(pg_url) as conn:
        not_loaded = conn.execute("SELECT count(*) FROM rutter.load_log WHERE status <> 'loaded'").fetchone()[0]
    assert not_loaded == 0

    # The broker URL (it may carry a password) appears in no run (its config, tags), job snapshot or event.
    with psycopg.connect(dagster_pg_url) as conn:
        events = "\n".join(row[0] for row in conn.execute("SELECT event FROM event_logs"))
    for run in [*runs, daily]:
        snapshot = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        assert broker_url not in serialize_value(run) + snapshot, run.run_id
    assert broker_url not in events
