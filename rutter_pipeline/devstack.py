"""``rutter-pipeline dev``: start what is missing and run ``dagster dev`` on this project.

- PostgreSQL: the embedded server in the state folder unless WAREHOUSE_URL and DAGSTER_PG_URL are set.
- Rutter: when no credentials are set, the local sandbox, whose demo merchants connect as you watch:
  its clock follows the real one, their initial sync finishes within a minute, INITIAL_UPDATE reaches
  the webhook receiver, and the lifecycle sensor adds their partitions and starts history backfills.
- The webhook receiver (``/webhooks/rutter``) filling the inbox the sensors read.
- Dagster: ``dagster dev`` (webserver + daemon: sensors, schedules, run queue) on the project.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from rutter_pipeline.settings import Settings
from rutter_pipeline.stack import prepare_stack_env
from rutter_pipeline.warehouse.migrations import migrate

log = logging.getLogger(__name__)
DEMO_PLATFORMS = ("SHOPIFY", "WOO_COMMERCE", "AMAZON", "BIG_COMMERCE", "SQUARE")
DEMO_SIZES = (40, 12, 150, 25, 60)  # orders per day: small to busy merchants


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="Dagster UI host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    parser.add_argument("--connections", type=int, default=3, help="demo merchants in the sandbox (default 3)")
    parser.add_argument("--history-days", type=int, default=30, help="days of sandbox history (default 30)")
    parser.add_argument("--sandbox-port", type=int, default=0, help="sandbox port (default: a free one)")
    parser.add_argument(
        "--webhook-port", type=int, default=0, help="webhook receiver port (default: a free one; path /webhooks/rutter)"
    )


class SandboxClock(threading.Thread):
    """Moves the sandbox's simulated clock along with the real one, so merchants finish their initial
    sync, orders keep arriving and webhooks fire while you watch the UI."""

    def __init__(self, control, interval: float = 5.0) -> None:
        super().__init__(name="sandbox-clock", daemon=True)
        self.control, self.interval = control, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self.stopped.wait(self.interval):
            now = time.monotonic()
            try:
                self.control.advance((now - last) / 60)
                last = now
            except Exception as exc:  # the sandbox going away ends the clock, not the stack
                log.warning("sandbox clock stopped: %s", exc)
                return


@contextlib.contextmanager
def rutter_and_webhooks(args: argparse.Namespace, warehouse_url: str) -> Iterator[None]:
    """Rutter (the real one when credentials are set, else the sandbox with demo merchants) and the
    webhook receiver feeding the inbox that the lifecycle and data sensors read."""
    from rutter_pipeline.webhooks.server import run_receiver

    settings = Settings.from_env()
    if settings.has_credentials:
        with run_receiver(warehouse_url, settings.client_secret, host=args.host, port=args.webhook_port) as url:
            print(f"Rutter: {settings.base_url}; point Rutter's webhooks at {url}", flush=True)
            yield
        return
    from rutter_pipeline.sandbox import SandboxConfig, run_sandbox

    with run_sandbox(SandboxConfig(connections=0), port=args.sandbox_port, subprocess=True) as sandbox:
        os.environ.update(
            {
                "RUTTER_BASE_URL": sandbox.base_url,
                "RUTTER_CLIENT_ID": sandbox.client_id,
                "RUTTER_CLIENT_SECRET": sandbox.client_secret,
            }
        )
        if not os.environ.get("RUTTER_HISTORY_START"):
            start = datetime.now(UTC).date() - timedelta(days=args.history_days)
            os.environ["RUTTER_HISTORY_START"] = start.isoformat()
        with run_receiver(warehouse_url, sandbox.client_secret, port=args.webhook_port) as url:
            sandbox.control.configure_webhooks(url=url)
            for i in range(args.connections):
                sandbox.control.create_connection(
                    platform=DEMO_PLATFORMS[i % len(DEMO_PLATFORMS)],
                    orders_per_day=DEMO_SIZES[i % len(DEMO_SIZES)],
                    history_days=args.history_days,
                    ready=False,
                    initial_sync_minutes=1,
                    seed=10 + i,
                )
            clock = SandboxClock(sandbox.control)
            clock.start()
            print(
                f"sandbox: {sandbox.base_url} with {args.connections} demo merchants connecting now "
                f"(their partitions and history backfills appear within a minute); webhooks -> {url}",
                flush=True,
            )
            try:
                yield
            finally:
                clock.stopped.set()


def run(args: argparse.Namespace) -> int:
    env = prepare_stack_env()
    migrate(env.warehouse_url)
    with rutter_and_webhooks(args, env.warehouse_url):
        cmd = [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-m",
            "rutter_pipeline.definitions",
            "-h",
            args.host,
            "-p",
            str(args.port),
        ]
        print(f"Dagster UI: http://{args.host}:{args.port}", flush=True)
        try:
            return subprocess.call(cmd)
        except KeyboardInterrupt:
            return 0
