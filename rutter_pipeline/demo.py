"""``rutter-pipeline demo --headless``: the whole stack, unattended, checked against ground truth.

Sandbox merchants connect over simulated time: one with data batching (INITIAL_UPDATE, then
HISTORICAL_UPDATE), one that disconnects and reconnects (CONNECTION_NEEDS_UPDATE / CONNECTION_UPDATED),
one that gets disabled (CONNECTION_DISABLED), the rest steady. Signed webhooks flow through the real
receiver into the inbox; ``dagster-daemon`` runs the sensors, the incremental schedule, the marts
automation and every run, on PostgreSQL storage. At the end the warehouse must equal the sandbox's
ground truth for every connection and entity; the command prints a summary and exits non-zero on any
mismatch or failed run.

The sandbox's clock starts a few hours behind the real one and is advanced by the demo, so Rutter's
"now" never passes the real now that Dagster's daily partitions and sensors work with.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import psycopg

from rutter_pipeline.connections.inbox import latest_event_id
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.entities import ENTITIES, EntitySpec
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.stack import prepare_stack_env
from rutter_pipeline.warehouse.embedded import stop_embedded_postgres
from rutter_pipeline.warehouse.migrations import migrate, psycopg_url
from rutter_pipeline.warehouse.partitioning import partition_day
from rutter_pipeline.warehouse.readback import read_records

ROLES = ("batching", "reconnects", "disabled")
SIM_HOURS = 4  # how far the demo moves the sandbox's clock
BATCHING_HISTORY_DAYS = 45  # batches are in months: the batching merchant needs more than one
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true", help="no UI (the only mode for now)")
    parser.add_argument("--connections", type=int, default=3, help="sandbox merchants (default 3)")
    parser.add_argument("--days", type=int, default=7, help="days of history per merchant (default 7)")
    parser.add_argument("--orders-per-day", type=int, default=30, help="typical merchant size (default 30)")
    parser.add_argument("--state-dir", default=None, help="keep the demo's state here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")


@dataclass
class Merchant:
    connection_id: str
    access_token: str
    platform: str
    role: str
    history_days: int
    frozen_truth: dict[str, list[dict]] | None = None  # for a disabled merchant: what was fetchable


@dataclass
class Demo:
    args: argparse.Namespace
    state: Path
    started: float = field(default_factory=time.monotonic)
    merchants: list[Merchant] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {message}"
        self.log.append(line)
        print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)  # the demo narrates; libraries' INFO lines drown it
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="rutter-demo-")).resolve()
    demo = Demo(args, state)
    try:
        return _run(demo)
    finally:
        stop_embedded_postgres(state / "postgres")
        if not args.state_dir:
            shutil.rmtree(state, ignore_errors=True)


def _on_sync_tick(moment: datetime, interval_minutes: int) -> datetime:
    """``moment`` moved back to the sandbox's last sync tick before it (ticks fall on multiples of the
    interval since the epoch).

    The sandbox announces a record by webhook at the first sync tick after it changed, while its API
    and its ground truth show it at once. A demo step that ended between two ticks left the records of
    the last minutes unannounced: only the 3-minute incremental schedule would fetch them, and the
    check that follows an idle pipeline found them missing (about one demo run in eight: an order,
    or a customer update and a transaction, created after the last tick). With the clock starting on a
    tick and every step a whole number of intervals, each step ends on a tick and nothing is left
    unannounced when the warehouse is compared.
    """
    step = interval_minutes * 60
    return datetime.fromtimestamp(int(moment.timestamp()) // step * step, UTC)


def _demo_env(demo: Demo, sandbox_now: datetime) -> None:
    """The environment every process of the demo shares (the daemon and its runs inherit it)."""
    for name in ("WAREHOUSE_URL", "DAGSTER_PG_URL", "DAGSTER_HOME", "RUTTER_PIPELINE_COMPUTE_LOGS", "SENTRY_DSN"):
        os.environ.pop(name, None)
    history = max(demo.args.days, BATCHING_HISTORY_DAYS)
    os.environ.update(
        {
            "RUTTER_PIPELINE_STATE_DIR": str(demo.state),
            "RUTTER_HISTORY_START": (sandbox_now.date() - timedelta(days=history)).isoformat(),
            "RUTTER_SENSOR_INTERVAL_SECONDS": "3",
            "RUTTER_WEBHOOK_DEBOUNCE_SECONDS": "8",
            "RUTTER_INCREMENTAL_CRON": "*/3 * * * *",
            "RUTTER_MAX_REQUESTS_PER_10S": "450",
        }
    )


def _run(demo: Demo) -> int:
    from rutter_pipeline.sandbox import SandboxConfig, run_sandbox
    from rutter_pipeline.webhooks.server import run_receiver

    real_now = datetime.now(UTC).replace(microsecond=0)
    tick_minutes = SandboxConfig().sync_interval_minutes
    sandbox_now = _on_sync_tick(real_now - timedelta(hours=SIM_HOURS + 1), tick_minutes)
    _demo_env(demo, sandbox_now)
    env = prepare_stack_env()
    migrate(env.warehouse_url)
    demo.say(f"state in {demo.state}; embedded PostgreSQL up")
    with ExitStack() as stack:
        sandbox = stack.enter_context(
            run_sandbox(SandboxConfig(now=sandbox_now, webhook_retry_base_seconds=0.2), subprocess=True)
        )
        os.environ.update(
            {
                "RUTTER_BASE_URL": sandbox.base_url,
                "RUTTER_CLIENT_ID": sandbox.client_id,
                "RUTTER_CLIENT_SECRET": sandbox.client_secret,
            }
        )
        hook_url = stack.enter_context(run_receiver(env.warehouse_url, sandbox.client_secret))
        sandbox.control.configure_webhooks(url=hook_url)
        demo.say(f"sandbox at {sandbox.base_url}, webhook receiver at {hook_url}")
        daemon = _start_daemon(demo)
        stack.callback(_stop, daemon)
        scenario = Scenario(demo, sandbox, env.warehouse_url, tick_minutes)
        scenario.play()
        return scenario.verify_and_report()


def _start_daemon(demo: Demo) -> subprocess.Popen:
    log = (demo.state / "daemon.log").open("w")
    cmd = [sys.executable, "-m", "dagster._daemon", "run", "-m", "rutter_pipeline.definitions"]
    if shutil.which("dagster-daemon"):
        cmd = [shutil.which("dagster-daemon"), "run", "-m", "rutter_pipeline.definitions"]  # type: ignore[list-item]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    demo.say(f"dagster-daemon started (pid {proc.pid}, log {demo.state / 'daemon.log'})")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class Scenario:
    def __init__(self, demo: Demo, sandbox, warehouse_url: str, tick_minutes: int) -> None:
        import dagster as dg

        self.demo = demo
        self.sandbox = sandbox
        self.tick_minutes = tick_minutes  # the sandbox's sync interval: see _on_sync_tick
        self.url = warehouse_url
        self.instance = dg.DagsterInstance.get()
        self.deadline = demo.started + demo.args.timeout
        self.start_day = sandbox.control.now().date()

    # -- the story ---------------------------------------------------------------------------
    def play(self) -> None:
        control = self.sandbox.control
        for i in range(self.demo.args.connections):
            role = ROLES[i] if i < len(ROLES) else "steady"
            history = BATCHING_HISTORY_DAYS if role == "batching" else self.demo.args.days
            conn = control.create_connection(
                platform=("SHOPIFY", "WOO_COMMERCE", "AMAZON", "BIG_COMMERCE", "SQUARE")[i % 5],
                orders_per_day=self.demo.args.orders_per_day * (1 + i % 3),
                history_days=history,
                ready=False,
                initial_sync_minutes=20,
                batches=[1, 1] if role == "batching" else None,
                batch_minutes=60,
                seed=100 + i,
            )
            self.demo.merchants.append(
                Merchant(conn["connection_id"], conn["access_token"], conn["platform"], role, history)
            )
            self.demo.say(f"merchant {conn['connection_id'][:8]} ({role}, {conn['platform']}) connects")
        self.advance(30, "initial syncs finish: INITIAL_UPDATE")
        self.wait_idle()
        if disabled := self.by_role("disabled"):
            disabled.frozen_truth = {name: self.truth(disabled, spec) for name, spec in ENTITIES.items()}
            control.action(disabled.connection_id, "disable")
            self.demo.say(f"merchant {disabled.connection_id[:8]} is disabled: CONNECTION_DISABLED")
        if reconnects := self.by_role("reconnects"):
            control.action(reconnects.connection_id, "needs_update")
            self.demo.say(f"merchant {reconnects.connection_id[:8]} uninstalls: CONNECTION_NEEDS_UPDATE")
        self.advance(70, "an hour passes: batch 2 (HISTORICAL_UPDATE), orders keep coming (ORDER_* webhooks)")
        self.wait_idle()
        if reconnects:
            control.action(reconnects.connection_id, "reconnect")
            self.demo.say(f"merchant {reconnects.connection_id[:8]} reconnects: CONNECTION_UPDATED")
        self.advance(30, "half an hour more of orders")
        self.wait_idle()

    def by_role(self, role: str) -> Merchant | None:
        return next((m for m in self.demo.merchants if m.role == role), None)

    def advance(self, minutes: int, what: str) -> None:
        if minutes % self.tick_minutes:  # every step ends on a sync tick: see _on_sync_tick
            raise ValueError(f"the demo advances in whole sync intervals ({self.tick_minutes} min), not {minutes}")
        now = self.sandbox.control.advance(minutes)
        if _on_sync_tick(now, self.tick_minutes) != now:
            raise RuntimeError(f"the sandbox's clock ({now}) is not on a sync tick: records would go unannounced")
        self.demo.say(f"+{minutes:g} simulated minutes: {what}")

    # -- waiting for the pipeline to settle ----------------------------------------------------
    def wait_idle(self, quiet: float = 8.0) -> None:
        """Until every webhook is delivered and processed, no run is queued or running, and the
        data sensor has nothing waiting, for ``quiet`` seconds in a row."""
        self.sandbox.control.wait_for_webhooks(timeout=60)
        calm_since: float | None = None
        while time.monotonic() < self.deadline:
            busy = self.busy()
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                self.demo.say(f"pipeline idle ({self.run_counts()})")
                return
            time.sleep(1)
        raise TimeoutError(f"the pipeline did not settle within {self.demo.args.timeout:.0f}s: {self.busy()}")

    def busy(self) -> str:
        import dagster as dg

        active = self.instance.get_runs(
            filters=dg.RunsFilter(
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ]
            )
        )
        if active:
            return f"{len(active)} run(s) active"
        latest = latest_event_id(self.url)
        cursors = self.sensor_cursors()
        lifecycle = int(cursors.get("connection_lifecycle_sensor") or 0)
        if lifecycle < latest:
            return "lifecycle events not yet read"
        data = json.loads(cursors.get("data_webhook_sensor") or '{"after": 0, "pending": {}}')
        if data["after"] < latest or data["pending"]:
            return "data webhooks waiting for their debounced sync"
        return ""

    def sensor_cursors(self) -> dict[str, str | None]:
        from dagster._core.scheduler.instigation import InstigatorType

        cursors = {}
        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            data = state.instigator_data
            cursors[state.name] = getattr(data, "cursor", None)
        return cursors

    def run_counts(self) -> str:
        runs = self.instance.get_runs()
        done = sum(r.status.value == "SUCCESS" for r in runs)
        failed = sum(r.status.value == "FAILURE" for r in runs)
        return f"{len(runs)} runs, {done} succeeded, {failed} failed"

    # -- the check --------------------------------------------------------------------------
    def window(self, merchant: Merchant) -> tuple[date, date]:
        """Every day the merchant can have records on: from its history start to the real today."""
        return self.start_day - timedelta(days=merchant.history_days), datetime.now(UTC).date()

    def truth(self, merchant: Merchant, spec: EntitySpec) -> list[dict]:
        start, end = self.window(merchant)
        lo, hi = day_window_ms(start)[0], day_window_ms(end)[1]
        control = self.sandbox.control
        if spec.created_at_filter:
            records = control.ground_truth(spec.name, merchant.connection_id, created_at_min=lo, created_at_max=hi)
        else:
            records = [
                r
                for r in control.ground_truth(spec.name, merchant.connection_id, updated_at_min=lo)
                if start <= partition_day(spec, r) <= end
            ]
        return sorted(records, key=_order)

    def stored(self, merchant: Merchant, spec: EntitySpec) -> list[dict]:
        start, end = self.window(merchant)
        return sorted(read_records(self.url, spec, merchant.connection_id, start, end), key=_order)

    def verify_and_report(self) -> int:
        mismatches: list[str] = []
        rows: dict[str, dict[str, int]] = {}
        registry = ConnectionRegistry(self.url)
        for merchant in self.demo.merchants:
            rows[merchant.connection_id] = {}
            for name, spec in ENTITIES.items():
                stored = self.stored(merchant, spec)
                expected = merchant.frozen_truth[name] if merchant.frozen_truth else self.truth(merchant, spec)
                rows[merchant.connection_id][name] = len(stored)
                if stored != expected:
                    mismatches.append(f"{merchant.connection_id[:8]} {name}: {_difference(stored, expected)}")
        failed = [r for r in self.instance.get_runs() if r.status.value == "FAILURE"]
        self._print_summary(rows, registry, failed, mismatches)
        return 1 if mismatches or failed else 0

    def _print_summary(self, rows, registry, failed, mismatches) -> None:
        from rutter_pipeline.defs.ingest import warehouse_key
        from rutter_pipeline.entities import ORDERS

        partitions = self.instance.get_materialized_partitions(warehouse_key(ORDERS))
        with psycopg.connect(psycopg_url(self.url)) as conn:
            rejects = conn.execute("SELECT count(*) FROM rutter.rejects").fetchone()[0]  # type: ignore[index]
        runs = self.instance.get_runs()
        triggers: dict[str, int] = {}
        for run in runs:
            trigger = run.tags.get("rutter/trigger") or ("automation" if "dagster/sensor_name" in run.tags else "other")
            triggers[trigger] = triggers.get(trigger, 0) + 1
        print("\n== rutter-pipeline demo summary")
        print(
            f"{'connection':<10} {'role':<11} {'platform':<13} {'state':<13} " + " ".join(f"{n:>12}" for n in ENTITIES)
        )
        for merchant in self.demo.merchants:
            state = registry.get(merchant.connection_id).state
            counts = " ".join(f"{rows[merchant.connection_id][n]:>12}" for n in ENTITIES)
            print(f"{merchant.connection_id[:8]:<10} {merchant.role:<11} {merchant.platform:<13} {state:<13} {counts}")
        print(f"partitions materialized (warehouse/orders): {len(partitions)}")
        print(f"rejects: {rejects}")
        print(
            f"runs: {len(runs)} ({', '.join(f'{k} {v}' for k, v in sorted(triggers.items()))}); failed: {len(failed)}"
        )
        print(f"wall time: {time.monotonic() - self.demo.started:.1f}s")
        if mismatches:
            print("MISMATCH with the sandbox's ground truth:")
            for line in mismatches:
                print(f"  {line}")
            self._print_diagnosis({line.split()[0] for line in mismatches})
        elif failed:
            print(f"FAILED runs: {', '.join(r.run_id for r in failed)}")
        else:
            print("OK: the warehouse equals the sandbox's ground truth for every connection and entity")

    def _print_diagnosis(self, prefixes: set[str]) -> None:
        """What a mismatch needs to be explained afterwards, when the demo's folder is gone (CI)."""
        deliveries = self.sandbox.control.webhook_log()
        statuses = dict(Counter(d["status"] for d in deliveries))
        runs = self.instance.get_run_records()
        cursors = {
            k: v
            for k, v in self.sensor_cursors().items()
            if k in ("connection_lifecycle_sensor", "data_webhook_sensor")
        }
        print(f"diagnosis: sandbox webhook deliveries {statuses}; inbox sensor cursors {cursors}")
        with psycopg.connect(psycopg_url(self.url)) as conn:
            for merchant in self.demo.merchants:
                cid = merchant.connection_id
                if cid[:8] not in prefixes:
                    continue
                failed = [d for d in deliveries if d["connection_id"] == cid and d["status"] != "delivered"]
                print(f"  {cid[:8]}: undelivered webhooks {failed}")
                events = conn.execute(
                    "SELECT code, count(*), max(id), min(received_at)::time(3)::text, max(received_at)::time(3)::text "
                    "FROM rutter.webhook_events "
                    "WHERE connection_id = %s GROUP BY code ORDER BY 3",
                    (cid,),
                ).fetchall()
                print(f"  {cid[:8]}: inbox (code, count, max id, first, last) {events}")
                marks = conn.execute(
                    "SELECT entity, watermark::text, updated_at::time(3)::text FROM rutter.sync_state "
                    "WHERE connection_id = %s ORDER BY entity",
                    (cid,),
                ).fetchall()
                print(f"  {cid[:8]}: watermarks {marks}")
                for record in runs:
                    run = record.dagster_run
                    if cid not in json.dumps(run.tags) + json.dumps(run.run_config, default=str):
                        continue
                    print(
                        f"  {cid[:8]}: run {run.run_id[:8]} {run.tags.get('rutter/trigger', 'automation')} "
                        f"{run.status.value} created {record.create_timestamp:%H:%M:%S.%f} "
                        f"started {_clock(record.start_time)} ended {_clock(record.end_time)}"
                    )


def _clock(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S.%f")


def _difference(stored: list[dict], expected: list[dict]) -> str:
    """What differs, precisely enough to act on: counts, and the fields of the first differing record."""
    have = {_key(r): r for r in stored}
    want = {_key(r): r for r in expected}
    missing, unexpected = want.keys() - have.keys(), have.keys() - want.keys()
    text = f"{len(stored)} stored vs {len(expected)} expected ({len(missing)} missing, {len(unexpected)} unexpected"
    changed = [k for k in want.keys() & have.keys() if want[k] != have[k]]
    if changed:
        a, b = have[changed[0]], want[changed[0]]
        fields = sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))
        text += f", {len(changed)} differ; e.g. {changed[0]} in {fields}"
        text += f": stored {[a.get(f) for f in fields]!r:.300} vs expected {[b.get(f) for f in fields]!r:.300}"
    return text + ")"


def _key(record: dict) -> str:
    return f"{record.get('id')}|{record.get('created_at')}"


def _order(record: dict) -> tuple[str, bytes]:
    """A total order: records with a null id (Amazon customers) may share id and created_at."""
    return _key(record), orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
