"""A real ``dagster-daemon`` (run queue, run monitoring, run retries, sensors) on the project's
``dagster.yaml``, over PostgreSQL storage, with the pipeline's sandbox and warehouse: what production
runs, so that the reliability tests see the daemon's own behaviour, not a re-enactment of it.

Runs are submitted the way the UI submits them (GraphQL ``launchRun`` on a workspace of the same code
location), so they wait in the daemon's queue under the instance's concurrency limits.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil
from dagster_graphql.test.utils import execute_dagster_graphql

from rutter_pipeline.defs.partitions import range_tags
from rutter_pipeline.stack import dagster_env, psycopg2_url
from rutter_pipeline_tests.fixtures.daemon import workspace
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "rutter_pipeline"  # the daemon's workspace and the test's must name the location alike
NEVER_CRON = "0 0 1 1 *"
LAUNCH_RUN = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack }
  ... on RunConfigValidationInvalid { errors { message } } } }
"""
_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


@dataclass
class DaemonStack:
    instance: dg.DagsterInstance
    context: object  # the test's workspace process context (launches runs)
    daemon: subprocess.Popen
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    orphans: list[psutil.Process] = field(default_factory=list)  # what killed daemons left behind

    def kill_daemon(self, grace: float = 2.0) -> None:
        """Stop the daemon as a supervisor does when it will not go: SIGTERM, SIGKILL after ``grace`` s.
        What it started (its code server, the runs that server launched) is left to live or die on its
        own, as after a crash; the stack ends those when it closes."""
        with suppress(psutil.NoSuchProcess):
            self.orphans.extend(psutil.Process(self.daemon.pid).children(recursive=True))
        self.daemon.terminate()
        try:
            self.daemon.wait(grace)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait(30)

    def start_daemon(self) -> None:
        """Start a new ``dagster-daemon`` on the same home and workspace (after ``kill_daemon``)."""
        assert self.daemon.poll() is not None, "the daemon is still running"
        self.daemon = _start_daemon(self.home, self.env)

    def launch(self, job: str, tags: dict[str, str], run_config: dict | None = None) -> str:
        result = execute_dagster_graphql(
            self.context.create_request_context(),
            LAUNCH_RUN,
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": "__repository__",
                        "jobName": job,
                    },
                    "runConfigData": run_config or {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                }
            },
        )
        payload = result.data["launchRun"]
        assert payload["__typename"] == "LaunchRunSuccess", payload
        return payload["run"]["runId"]

    def launch_range(self, connection_id: str, start, end, run_config: dict | None = None) -> str:
        """A range run of ``ingest_job`` over the months of [start, end], as the sensors request one."""
        tags = {**range_tags(connection_id, start, end), "rutter/trigger": "test"}
        return self.launch("ingest_job", tags, run_config)

    def run(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def wait(self, run_id: str, statuses: set[dg.DagsterRunStatus], timeout: float = 240) -> dg.DagsterRun:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run.status in statuses:
                return run
            assert self.daemon.poll() is None, f"dagster-daemon exited; see {self.home / 'daemon.log'}"
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run.status.value} after {timeout}s, not {statuses}")
            time.sleep(0.2)

    def retry_of(self, run_id: str, timeout: float = 120) -> str:
        """The run the daemon launched to retry ``run_id`` (its ``dagster/auto_retry_run_id``)."""
        deadline = time.monotonic() + timeout
        while (retry := self.run(run_id).tags.get("dagster/auto_retry_run_id")) is None:
            assert time.monotonic() < deadline, f"run {run_id} was not retried within {timeout}s"
            time.sleep(0.2)
        return retry

    def worker_pid(self, run_id: str, timeout: float = 120) -> int:
        """The pid of the run's worker process, from its 'Started process for run' event."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                found = _PID.search(entry.message or "")
                if found:
                    return int(found.group(1))
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} reported no worker process within {timeout}s")

    def step_started(self, run_id: str, prefix: str) -> bool:
        return any(
            (e.dagster_event.step_key or "").startswith(prefix)
            for e in self.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        )

    def messages(self, run_id: str) -> list[str]:
        return [e.message or "" for e in self.instance.all_logs(run_id)]


def _start_daemon(home: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(home / "daemon.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(home / "workspace.yaml")],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop_orphans(procs: list[psutil.Process], grace: float = 15) -> None:
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()


def _stop_tree(proc: subprocess.Popen, grace: float = 15) -> None:
    """Stop the daemon and what it started (its code server outlives it otherwise)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)
    for child in children:
        with suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        child.kill()


@contextmanager
def daemon_stack(
    pipeline: Pipeline, dagster_pg_url: str, work: Path, monkeypatch, **env_overrides: str
) -> Iterator[DaemonStack]:
    """The project's dagster.yaml in a fresh Dagster home on ``dagster_pg_url``, a ``dagster-daemon``
    serving it, and the test's own instance and workspace on the same storage."""
    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / "workspace.yaml").write_text(
        "load_from:\n"
        f"  - python_module:\n      module_name: rutter_pipeline.definitions\n      location_name: {LOCATION}\n"
        f"      working_directory: {ROOT}\n"
    )
    env = {
        **pipeline.env,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": psycopg2_url(dagster_pg_url),
        "RUTTER_PIPELINE_COMPUTE_LOGS": str(work / "compute_logs"),
        "RUTTER_PIPELINE_STATE_DIR": str(work / "state"),
        "RUTTER_INCREMENTAL_CRON": NEVER_CRON,
        **dagster_env(),
        **env_overrides,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with ExitStack() as stack:
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        instance.add_dynamic_partitions("connections", [pipeline.connection_id])
        daemon = _start_daemon(home, env)
        handle = DaemonStack(instance, None, daemon, home, env)
        stack.callback(lambda: _stop_orphans(handle.orphans))  # runs after the current daemon's stop
        stack.callback(lambda: _stop_tree(handle.daemon))  # whichever daemon runs at the end
        handle.context = stack.enter_context(workspace(instance))
        yield handle
