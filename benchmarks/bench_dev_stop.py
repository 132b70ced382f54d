"""How fast ``python3 dev.py start`` shows its banner and how fast a stop signal ends everything (issue 18).

Starts ``dev.py start`` in a session of its own with a fresh state folder, times the banner, then sends
the signal - ``ctrl-c`` (SIGINT to dev.py's process group, what a terminal sends) or ``sigterm`` (to
dev.py alone, what a supervisor sends) - either at once (an idle stack) or, with ``--during-run``,
as soon as a run worker of the demo merchants' history backfills is up; and times until every process
dev.py started is gone.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dev_stop.py --signal ctrl-c [--during-run] [--repeat 3]

The embedded PostgreSQL of each round is stopped after it (``dev.py stop``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def one_round(sig: str, during_run: bool, connections: int) -> tuple[float, float, int]:
    """(banner seconds, stop seconds, processes stopped)."""
    with tempfile.TemporaryDirectory(prefix="bench-dev-stop-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_"))}
        env["RUTTER_PIPELINE_STATE_DIR"] = str(Path(tmp) / "state")
        out = Path(tmp) / "stdout.txt"
        started = time.monotonic()
        cmd = [sys.executable, "dev.py", "start", "--port", str(free_port()), "--connections", str(connections)]
        with out.open("w") as stdout:
            proc = subprocess.Popen(
                [*cmd, "--history-days", "40"], cwd=ROOT, env=env, stdout=stdout, start_new_session=True
            )
        try:
            while "is up" not in out.read_text():
                if proc.poll() is not None:
                    raise SystemExit(f"dev.py exited with {proc.returncode}:\n{out.read_text()}")
                time.sleep(0.1)
            banner = time.monotonic() - started
            while during_run and not any(
                "spawn_main" in " ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)
            ):
                time.sleep(0.2)
            children = psutil.Process(proc.pid).children(recursive=True)
            stop_started = time.monotonic()
            if sig == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM)
            gone, alive = psutil.wait_procs([psutil.Process(proc.pid), *children], timeout=120)
            stopped = time.monotonic() - stop_started
            if alive:
                raise SystemExit(f"still running after 120 s: {alive}")
            return banner, stopped, len(gone)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run([sys.executable, "dev.py", "stop"], cwd=ROOT, env=env, capture_output=True, check=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", choices=("ctrl-c", "sigterm"), default="ctrl-c")
    parser.add_argument("--during-run", action="store_true", help="signal once a run worker is up")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for i in range(args.repeat):
        banner, stopped, count = one_round(args.signal, args.during_run, args.connections)
        print(
            f"round {i + 1}: banner after {banner:.1f} s; {args.signal}"
            f"{' during a run' if args.during_run else ''}: {count} processes gone after {stopped:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
