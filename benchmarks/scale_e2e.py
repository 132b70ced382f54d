"""Scale benchmark: N connections end to end through a real ``dagster-daemon``; prints one JSON object.

What runs: the sandbox in a process of its own with N connections alike (``--orders-per-day``, a few
days of history), PostgreSQL (embedded, or ``--pg-url``: fresh databases for the warehouse and for
Dagster's storage, dropped at the end), the webhook receiver (in this process, as ``rutter-pipeline
dev`` runs it), and ``dagster-daemon run`` with the project's ``dagster.yaml`` (queued runs, its
concurrency limits). The N connections are registered with ``rutter-pipeline connections import``
(the registry and the ``connections`` partitions) from a CSV file.

How the schedules are triggered: the daily schedule's cron is 00:15 UTC, so the harness does what
the UI's "Test schedule" -> "Launch all runs" does: the GraphQL ``scheduleDryRun`` mutation evaluates
the schedule in the code server at a chosen tick time (the sandbox's "now", so it loads the
sandbox's yesterday), and ``launchMultipleRuns`` submits every run request it returned to the
instance's run coordinator. The runs are queued; the daemon's run queue launches them under
``dagster.yaml``'s limits. The incremental schedule is triggered the same way
(``RUTTER_INCREMENTAL_CRON`` is set to once a year, so that the daemon's scheduler starts none of its
own). The harness reads the warehouse only through SQL and the sandbox through its control API.

Measured:
  a) daily load of yesterday for all N connections: wall time from submitting the runs to the last
     one finished, runs, failed runs, CPU seconds of the daemon's process tree (daemon, code server,
     run workers, sampled every 0.2 s; a process's CPU after its last sample is missed), rows of
     that day in ``rutter.orders`` against the sandbox's ground truth;
  b) the sandbox's clock advanced by ``--change-minutes`` (orders created and changed meanwhile),
     then the incremental schedule: the same figures, and whether every order changed in that span
     is in the warehouse at its new ``updated_at``;
  c) connection N+1 created in the sandbox with webhooks on: its signed INITIAL_UPDATE reaches the
     receiver, ``connection_lifecycle_sensor`` acts on it; seconds until its first run is launched;
  d) peak RSS of the daemon and of the largest run worker.

    .venv/bin/python benchmarks/scale_e2e.py --connections 100
    .venv/bin/python benchmarks/scale_e2e.py --connections 1000 --timeout 3600
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, suppress
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LOCATION = "rutter_pipeline.definitions"  # what `dagster-daemon run -m rutter_pipeline.definitions` names it
REPOSITORY = "__repository__"
DAILY_TICK = dt_time(0, 14)  # just before daily_ingest_schedule's 00:15 UTC
LAUNCHED = {"STARTING", "STARTED", "SUCCESS", "FAILURE", "CANCELING", "CANCELED"}
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

DRY_RUN = """
mutation($s: ScheduleSelector!, $t: Float) { scheduleDryRun(selectorData: $s, timestamp: $t) {
  __typename
  ... on DryRunInstigationTick { evaluationResult {
      runRequests { runKey runConfigYaml jobName tags { key value } } skipReason error { message } } }
  ... on PythonError { message stack } } }
"""
SCHEDULE_JOB = """
query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
  __typename ... on Schedule { pipelineName } ... on PythonError { message } } }
"""
LAUNCH_MANY = """
mutation($p: [ExecutionParams!]!) { launchMultipleRuns(executionParamsList: $p) {
  __typename
  ... on LaunchMultipleRunsResult { launchMultipleRunsResult {
      __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
      ... on RunConfigValidationInvalid { errors { message } } } }
  ... on PythonError { message stack } } }
"""


class TreeSampler:
    """Samples the daemon's process tree: CPU seconds per process (last value seen) and peak RSS.

    A run worker is a child of the code server the daemon started, so walking the daemon's
    descendants finds them all, and the step processes they may start.
    """

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> user + system seconds
        self.rss: dict[tuple[int, float], int] = {}
        self.kind: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    if key not in self.kind:
                        self.kind[key] = _kind(proc, self.root)
            except psutil.Error:
                continue
            self.cpu[key] = times.user + times.system
            self.rss[key] = max(self.rss.get(key, 0), rss)

    def cpu_total(self) -> float:
        self.sample()
        return sum(self.cpu.values())

    def peak_rss_mb(self, kind: str) -> float:
        return round(max((v for k, v in self.rss.items() if self.kind.get(k) == kind), default=0) / 2**20, 1)


def _kind(proc: psutil.Process, root: psutil.Process) -> str:
    """daemon; code_server (the daemon's gRPC server); run_worker: any process below the code server
    (the run processes it launches and what they start: worker pools, multiprocessing helpers)."""
    if proc.pid == root.pid:
        return "daemon"
    return "code_server" if "grpc" in proc.cmdline() else "run_worker"


def main(argv: list[str] | None = None) -> int:
    # Fresh databases each run: their access tokens are stored encrypted, and a key of this run's own
    # will do (a warehouse of your own needs RUTTER_TOKEN_KEY; warehouse/tokens.py).
    from rutter_pipeline.warehouse.tokens import new_key

    os.environ.setdefault("RUTTER_TOKEN_KEY", new_key())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--orders-per-day", type=int, default=100)
    parser.add_argument("--history-days", type=int, default=3)
    parser.add_argument(
        "--change-minutes",
        type=float,
        default=120,
        help="how far the sandbox's clock moves before the incremental sync",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each phase may take")
    parser.add_argument("--pg-url", help="a PostgreSQL server URL to use (default: start an embedded one)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    return 0 if result["daily_load"]["orders_loaded"] == result["daily_load"]["orders_expected"] else 1


def run(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_stack import dagster_home_env, stop_code_servers, work_databases

    from rutter_pipeline.sandbox import SandboxConfig, run_sandbox
    from rutter_pipeline.settings import Settings
    from rutter_pipeline.warehouse.migrations import migrate
    from rutter_pipeline.webhooks.server import run_receiver

    n = args.connections
    with ExitStack() as stack:
        work, warehouse_url, dagster_url = work_databases(stack, "scale-e2e-", "scale", args.pg_url, args.keep)

        config = SandboxConfig(
            client_id="bench",
            client_secret="bench-secret",
            rate_limit_per_10s=10_000_000,
            cache_records=max(250_000, n * args.orders_per_day * 8),
        )
        sandbox = stack.enter_context(run_sandbox(config, subprocess=True))
        control = sandbox.control
        conns = control.create_connections(
            n, orders_per_day=args.orders_per_day, history_days=args.history_days, seed=1
        )
        now = control.now()
        yesterday = now.date() - timedelta(days=1)

        history_start = (now.date() - timedelta(days=args.history_days + 1)).replace(day=1)
        env = dagster_home_env(work, dagster_url, warehouse_url, sandbox, history_start)
        home = Path(env["DAGSTER_HOME"])
        env["RUTTER_SENSOR_INTERVAL_SECONDS"] = "5"
        env["RUTTER_WEBHOOK_DEBOUNCE_SECONDS"] = "3600"  # data webhooks of phase c start no syncs meanwhile
        os.environ.update(env)
        migrate(warehouse_url)
        register(work / "connections.csv", conns)

        receiver_url = stack.enter_context(run_receiver(warehouse_url, sandbox.client_secret))
        daemon_log = stack.enter_context((home / "daemon.log").open("wb"))
        stack.callback(stop_code_servers, home)  # after the daemon (the stack unwinds in reverse)
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", "rutter_pipeline.definitions"],
            cwd=ROOT,
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, daemon)
        sampler = TreeSampler(daemon.pid).start()
        stack.callback(sampler.stop)

        import dagster as dg
        from dagster._core.test_utils import create_test_daemon_workspace_context
        from dagster._core.workspace.load_target import ModuleTarget

        instance = stack.enter_context(dg.DagsterInstance.get())
        target = ModuleTarget(
            module_name="rutter_pipeline.definitions",
            attribute="defs",
            working_directory=str(ROOT),
            location_name=LOCATION,
        )
        context = stack.enter_context(create_test_daemon_workspace_context(target, instance))
        harness = Harness(instance, context, daemon, sampler, args.timeout)

        # a) the daily load of yesterday
        # the tick of today 00:15 UTC (the dry run evaluates the first tick at or after the time given)
        daily = harness.schedule_phase("daily_ingest_schedule", datetime.combine(now.date(), DAILY_TICK, UTC))
        day_start = datetime.combine(yesterday, datetime.min.time(), UTC)
        expected = sum(
            len(
                control.ground_truth(
                    "orders",
                    c["connection_id"],
                    created_at_min=_ms(day_start),
                    created_at_max=_ms(day_start + timedelta(days=1)) - 1,
                )
            )
            for c in conns
        )
        daily["orders_loaded"] = sql_one(
            warehouse_url,
            "SELECT count(*) FROM rutter.orders WHERE created_at >= %s AND created_at < %s",
            (day_start, day_start + timedelta(days=1)),
        )
        daily["orders_expected"] = expected

        # b) changes at the sandbox, then the incremental sync
        before = control.now()
        after = control.advance(args.change_minutes)
        changed = {
            (c["connection_id"], o["id"], _parse(o["updated_at"]))
            for c in conns
            for o in control.ground_truth(
                "orders", c["connection_id"], updated_at_min=_ms(before) + 1, updated_at_max=_ms(after)
            )
        }
        incremental = harness.schedule_phase("incremental_sync_schedule", after)
        stored = {
            (cid, oid, upd)
            for cid, oid, upd in sql_all(
                warehouse_url,
                "SELECT connection_id, id, updated_at FROM rutter.orders WHERE updated_at > %s",
                (before,),
            )
        }
        incremental["orders_changed_at_sandbox"] = len(changed)
        incremental["orders_changed_in_warehouse"] = len(changed & stored)
        incremental["changes_arrived"] = bool(changed) and changed <= stored

        # c) INITIAL_UPDATE of connection N+1 -> its first run launched
        control.configure_webhooks(url=receiver_url)
        started = time.monotonic()
        new = control.create_connection(orders_per_day=args.orders_per_day, history_days=args.history_days, seed=n + 1)
        initial_update_to_run_s = harness.wait_for_connection_run(new["connection_id"], started)

        result = {
            "connections": n,
            "batch_size": getattr(Settings.from_env(), "batch_size", None),
            "day": yesterday.isoformat(),
            "daily_load": daily,
            "incremental": incremental,
            "initial_update_to_run_s": initial_update_to_run_s,
            "rss_mb": {
                "daemon": sampler.peak_rss_mb("daemon"),
                "run_worker": sampler.peak_rss_mb("run_worker"),
                "code_server": sampler.peak_rss_mb("code_server"),
                "sandbox": control.stats()["process"]["peak_rss_mb"],
            },
            "sandbox_cpu_seconds": control.stats()["process"]["cpu_seconds"],
            "cpus": os.cpu_count(),
        }
    return result


class Harness:
    def __init__(self, instance, context, daemon: subprocess.Popen, sampler: TreeSampler, timeout: float) -> None:
        self.instance, self.context, self.daemon, self.sampler, self.timeout = (
            instance,
            context,
            daemon,
            sampler,
            timeout,
        )

    def _graphql(self, query: str, variables: dict) -> dict:
        from dagster_graphql.test.utils import execute_dagster_graphql

        result = execute_dagster_graphql(self.context.create_request_context(), query, variables)
        if result.errors:
            raise RuntimeError(f"GraphQL errors: {result.errors}")
        return result.data

    def trigger(self, schedule: str, at: datetime) -> list[str]:
        """Evaluate ``schedule`` at tick time ``at`` and submit its run requests to the run queue."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": schedule}
        tick = self._graphql(DRY_RUN, {"s": selector, "t": at.timestamp()})["scheduleDryRun"]
        if tick["__typename"] != "DryRunInstigationTick":
            raise RuntimeError(f"{schedule}: {tick}")
        job = self._graphql(SCHEDULE_JOB, {"s": selector})["scheduleOrError"].get("pipelineName")
        evaluation = tick["evaluationResult"]
        if evaluation["error"] or not evaluation["runRequests"]:
            raise RuntimeError(f"{schedule} requested no runs: {evaluation}")
        params = [
            {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "jobName": request["jobName"] or job,
                },
                "runConfigData": request["runConfigYaml"],
                "executionMetadata": {"tags": [*request["tags"], {"key": "dagster/schedule_name", "value": schedule}]},
            }
            for request in evaluation["runRequests"]
        ]
        launched = self._graphql(LAUNCH_MANY, {"p": params})["launchMultipleRuns"]
        if launched["__typename"] != "LaunchMultipleRunsResult":
            raise RuntimeError(f"{schedule}: runs not submitted: {launched}")
        results = launched["launchMultipleRunsResult"]
        bad = [r for r in results if r["__typename"] != "LaunchRunSuccess"]
        if bad:
            raise RuntimeError(f"{schedule}: {len(bad)} runs not submitted: {bad[:3]}")
        return [r["run"]["runId"] for r in results]

    def schedule_phase(self, schedule: str, at: datetime) -> dict:
        cpu_before = self.sampler.cpu_total()
        started = time.monotonic()
        run_ids = self.trigger(schedule, at)
        runs = self.wait_finished(run_ids)
        seconds = round(time.monotonic() - started, 1)
        failed = [r for r in runs if r.status.value != "SUCCESS"]
        out = {
            "seconds": seconds,
            "runs": len(runs),
            "failed_runs": len(failed),
            "cpu_seconds": round(self.sampler.cpu_total() - cpu_before, 1),
        }
        if failed:
            out["first_failures"] = [self.failure_message(r.run_id) for r in failed[:3]]
        return out

    def failure_message(self, run_id: str) -> str:
        """The first error a failed run logged (engine or step failure), shortened."""
        for record in self.instance.all_logs(run_id):
            event = record.dagster_event
            if event is not None and event.event_type_value in ("STEP_FAILURE", "PIPELINE_FAILURE", "ENGINE_EVENT"):
                error = getattr(event.event_specific_data, "error", None)
                if error is not None:
                    return f"{event.event_type_value}: {error.message.strip()[:300]}"
        return "no error event"

    def wait_finished(self, run_ids: list[str]) -> list:
        deadline = time.monotonic() + self.timeout
        while True:
            runs = [self.instance.get_run_by_id(run_id) for run_id in run_ids]
            if all(r.status.value in FINISHED for r in runs):
                return runs
            self._alive(deadline, f"{sum(r.status.value not in FINISHED for r in runs)} runs unfinished")
            time.sleep(0.5)

    def wait_for_connection_run(self, connection_id: str, started: float) -> float:
        import dagster as dg

        deadline = time.monotonic() + self.timeout
        while True:
            runs = self.instance.get_runs(filters=dg.RunsFilter(tags={"rutter/connection": connection_id}))
            if any(r.status.value in LAUNCHED for r in runs):
                return round(time.monotonic() - started, 1)
            self._alive(deadline, f"no run launched for {connection_id}")
            time.sleep(0.2)

    def _alive(self, deadline: float, what: str) -> None:
        if self.daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {self.daemon.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {self.timeout} s: {what}")


def register(path: Path, conns: list[dict]) -> None:
    """The N connections into the registry and the ``connections`` partitions, as an operator does it."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["connection_id", "access_token", "platform"])
        writer.writerows([c["connection_id"], c["access_token"], c["platform"]] for c in conns)
    cli = Path(sys.executable).with_name("rutter-pipeline")
    done = subprocess.run([str(cli), "connections", "import", str(path)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"connections import failed: {done.stderr[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the daemon and whatever it started (code server, run workers still going)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in children:
        with suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()


def sql_one(url: str, query: str, params: tuple) -> int:
    import psycopg

    with psycopg.connect(url) as pg:
        return pg.execute(query, params).fetchone()[0]  # type: ignore[index]


def sql_all(url: str, query: str, params: tuple) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as pg:
        return pg.execute(query, params).fetchall()


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


if __name__ == "__main__":
    raise SystemExit(main())
