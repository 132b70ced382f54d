"""``rutter-pipeline dev``: start what is missing and run ``dagster dev`` on this project.

- PostgreSQL: the embedded server in the state folder unless WAREHOUSE_URL and DAGSTER_PG_URL are set.
- Rutter: when no credentials are set, the local sandbox, whose demo merchants connect as you watch:
  its clock follows the real one, their initial sync finishes within a minute, INITIAL_UPDATE reaches
  the webhook receiver, and the lifecycle sensor adds their partitions and starts history backfills.
- The webhook receiver (``/webhooks/rutter``) filling the inbox the sensors read.
- Dagster: ``dagster dev`` (webserver + daemon: sensors, schedules, run queue) on the project.

Quiet start, clean stop: everything the parts print (PostgreSQL setup, migrations, Dagster's daemon and
webserver) goes to ``<state>/dev.log``; the terminal gets one line while starting and a banner once the
UI answers. SIGINT, SIGTERM or SIGHUP stop every child: ``dagster dev`` runs in a process group of its
own (so a terminal's Ctrl-C reaches only this process, which then stops the children in order) and is
asked to shut down its webserver, daemon and code servers; whatever is left in its group after a grace
period is killed. The embedded PostgreSQL keeps running (``rutter-pipeline stop`` stops it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TextIO

import requests

from rutter_pipeline.settings import Settings, state_dir
from rutter_pipeline.stack import prepare_stack_env
from rutter_pipeline.warehouse.embedded import psql_path
from rutter_pipeline.warehouse.migrations import migrate

log = logging.getLogger(__name__)
DEMO_PLATFORMS = ("SHOPIFY", "WOO_COMMERCE", "AMAZON", "BIG_COMMERCE", "SQUARE")
DEMO_SIZES = (40, 12, 150, 25, 60)  # orders per day: small to busy merchants
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
LOG_NAME = "dev.log"
PID_NAME = "dev.pid"
# How long ``dagster dev`` gets to stop its webserver, daemon and code servers itself before its whole
# process group is killed; then how long the rest of the group (run workers) gets after a SIGTERM.
DAGSTER_GRACE_SECONDS = 20.0
LEFTOVER_GRACE_SECONDS = 5.0
# Generous: a first start on a busy laptop loads the code location in the code server, then the webserver.
UI_START_TIMEOUT = 600.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="Dagster UI host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    parser.add_argument("--connections", type=int, default=3, help="demo merchants in the sandbox (default 3)")
    parser.add_argument("--history-days", type=int, default=30, help="days of sandbox history (default 30)")
    parser.add_argument("--sandbox-port", type=int, default=0, help="sandbox port (default: a free one)")
    parser.add_argument(
        "--webhook-port", type=int, default=0, help="webhook receiver port (default: a free one; path /webhooks/rutter)"
    )


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    on the way swallows it; caught once in :func:`run`, which then reports nothing but "stopped"."""


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP handling for the dev stack.

    The first signal raises :class:`Stopped` in the main thread, which unwinds the stack's context
    managers (each stops its part). A second signal does not raise again, so it cannot break a part's
    cleanup half-way; it sets ``hurry``, and the cleanup then kills instead of waiting.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.hurry = threading.Event()
        self.terminal: TextIO | None = None  # told "stopping" at once: the cleanup may take seconds
        self.cleaning = False  # the stack is stopping for another reason (an error): do not raise into it

    def install(self) -> None:
        # Installed before any child starts: a child inherits an ignored SIGINT (a background job of a
        # non-interactive shell has one) but not a Python handler, so Dagster's own handling works.
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None or self.cleaning:
            self.hurry.set()
            return
        self.received = signal.Signals(signum)
        if self.terminal is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed terminal must not hide the stop
                print(f"stopping ({self.received.name}) ...", file=self.terminal, flush=True)
        raise Stopped(self.received.name)


@dataclass(frozen=True)
class Endpoints:
    """What the banner tells the user about Rutter and the receiver."""

    rutter_url: str
    webhook_url: str
    demo_merchants: int | None  # None: the real Rutter


@dataclass(frozen=True)
class Terminal:
    """Where this process's stdout and stderr went before :func:`output_to_log` redirected them."""

    out: TextIO
    err: TextIO


@contextlib.contextmanager
def output_to_log(path: Path) -> Iterator[Terminal]:
    """Send this process's stdout and stderr, and so every child's, to ``path`` for the rest of the
    process; yield the terminal.

    The file descriptors themselves are redirected (not only ``sys.stdout``), because most of the noise
    comes from children that inherit them: pgserver's initdb and pg_ctl, the sandbox, ``dagster dev``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # the previous session's log, kept for one more start
        path.replace(path.with_name(path.name + ".1"))
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = Terminal(os.fdopen(os.dup(1), "w", buffering=1), os.fdopen(os.dup(2), "w", buffering=1))
    with path.open("a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        yield terminal
    # Not restored: pgserver logs from an atexit handler, after this block, and that belongs in the log too.


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
def rutter_and_webhooks(args: argparse.Namespace, warehouse_url: str) -> Iterator[Endpoints]:
    """Rutter (the real one when credentials are set, else the sandbox with demo merchants) and the
    webhook receiver feeding the inbox that the lifecycle and data sensors read."""
    from rutter_pipeline.webhooks.server import run_receiver

    settings = Settings.from_env()
    if settings.has_credentials and settings.client_secret:
        with run_receiver(warehouse_url, settings.client_secret, host=args.host, port=args.webhook_port) as url:
            log.info("Rutter: %s; point Rutter's webhooks at %s", settings.base_url, url)
            yield Endpoints(settings.base_url, url, None)
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
            log.info("sandbox: %s with %d demo merchants; webhooks -> %s", sandbox.base_url, args.connections, url)
            try:
                yield Endpoints(sandbox.base_url, url, args.connections)
            finally:
                clock.stopped.set()


def stop_process_group(proc: subprocess.Popen, hurry: threading.Event, grace: float = DAGSTER_GRACE_SECONDS) -> None:
    """Stop ``proc`` (a process-group leader) and everything left in its group.

    ``proc`` gets SIGINT first, which ``dagster dev`` treats as Ctrl-C: it tells its webserver and
    daemon to shut down and stops its code servers. Past ``grace`` (or at once when ``hurry`` is set)
    the group is killed. Run workers the code server started may outlive it in the group: they get
    SIGTERM (Dagster marks their runs as failed/canceled), then SIGKILL.
    """
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline and not hurry.is_set():
            time.sleep(0.1)
        if proc.poll() is None:
            log.warning("dagster dev did not stop within %.0f s; killing its process group", grace)
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
        while _signal_group(pgid, 0) and time.monotonic() < deadline and not hurry.is_set():
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def dagster_dev(args: argparse.Namespace, signals: StopSignals) -> Iterator[subprocess.Popen]:
    """``dagster dev`` in a session of its own, stopped with all its descendants when the block ends."""
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "rutter_pipeline.definitions"]
    cmd += ["-h", args.host, "-p", str(args.port)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        signals.cleaning = True
        stop_process_group(proc, signals.hurry)


def ensure_port_free(host: str, port: int) -> None:
    """Fail at once when the UI's port is taken: Dagster's webserver only logs that it cannot bind, and
    the stack would wait for a UI that never comes. Bound as uvicorn binds (SO_REUSEADDR), so a closed
    connection in TIME_WAIT does not count as taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeError(
                f"port {port} on {host} is in use ({exc.strerror}): another dev? stop it with `python3 dev.py stop`,"
                " or start this one with --port"
            ) from None


def wait_for_ui(proc: subprocess.Popen, url: str, timeout: float = UI_START_TIMEOUT) -> None:
    """Until the webserver answers; an error if ``dagster dev`` exits first or it takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Dagster UI did not answer at {url} within {timeout:.0f} s")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/server_info", timeout=2).ok:
                return
        time.sleep(0.5)


def banner(ui_url: str, endpoints: Endpoints, psql: str, log_path: Path) -> str:
    if endpoints.demo_merchants is None:
        rutter = f"  Rutter:     {endpoints.rutter_url} (point its webhooks at {endpoints.webhook_url})"
    else:
        rutter = (
            f"  sandbox: {endpoints.rutter_url} ({endpoints.demo_merchants} demo merchant"
            f"{'' if endpoints.demo_merchants == 1 else 's'} connecting; "
            f"webhooks -> {endpoints.webhook_url})"
        )
    return "\n".join(
        [
            "rutter-pipeline dev is up",
            f"  Dagster UI: {ui_url}",
            rutter,
            f"  warehouse:  {psql}",
            f"  logs:       {log_path}",
            "  stop:       Ctrl-C here, or `python3 dev.py stop` (`rutter-pipeline stop`) from another shell,",
            "              which also stops the embedded PostgreSQL that Ctrl-C leaves running",
        ]
    )


def psql_command(warehouse_url: str, embedded: bool) -> str:
    """The command that opens ``psql`` on the warehouse. A URL the user set may hold a password: the
    banner then names the variable rather than printing it."""
    if not embedded:
        return 'psql "$WAREHOUSE_URL"'
    psql = psql_path()
    return f"{shlex.quote(str(psql)) if psql else 'psql'} {shlex.quote(warehouse_url)}"


def ui_url(args: argparse.Namespace) -> str:
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    return f"http://{f'[{host}]' if ':' in host else host}:{args.port}"


def run(args: argparse.Namespace) -> int:
    signals = StopSignals()
    signals.install()
    try:
        return _run(args, signals)
    except Stopped:  # a signal in the few lines outside _run's own handling: nothing was started
        return 0


def _run(args: argparse.Namespace, signals: StopSignals) -> int:
    state = state_dir()
    log_path, pid_file = state / LOG_NAME, state / PID_NAME
    code = 1
    with output_to_log(log_path) as terminal:
        signals.terminal = terminal.out
        print(f"starting PostgreSQL, Rutter, the webhook receiver and Dagster (log: {log_path})", file=terminal.out)
        try:
            ensure_port_free(args.host, args.port)
            pid_file.write_text(f"{os.getpid()}\n")
            embedded = not os.environ.get("WAREHOUSE_URL")
            env = prepare_stack_env()
            migrate(env.warehouse_url)
            with rutter_and_webhooks(args, env.warehouse_url) as endpoints, dagster_dev(args, signals) as proc:
                url = ui_url(args)
                wait_for_ui(proc, url)
                print(banner(url, endpoints, psql_command(env.warehouse_url, embedded), log_path), file=terminal.out)
                proc.wait()
                raise RuntimeError(f"dagster dev exited with {proc.returncode}")
        except Stopped:
            code = 0
        except Exception as exc:
            log.exception("rutter-pipeline dev failed")
            print(f"rutter-pipeline dev failed: {exc} (details in {log_path})", file=terminal.err)
        finally:
            signals.terminal = None
            with contextlib.suppress(FileNotFoundError):
                if pid_file.read_text().strip() == str(os.getpid()):
                    pid_file.unlink()
        print("stopped" if code == 0 else "stopped after an error", file=terminal.out)
    return code
