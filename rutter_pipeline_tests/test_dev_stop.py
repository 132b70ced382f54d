"""``python3 dev.py start`` starts quietly and stops cleanly.

The README's main command prints a banner (UI, sandbox, psql, how to stop) instead of the setup's
logs, and a stop signal - a terminal's Ctrl-C (SIGINT to dev.py's process group) or a supervisor's
SIGTERM to dev.py alone - stops every process it started (sandbox, dagster dev, webserver, daemon,
code servers) within seconds, with no traceback, leaving no port open. ``dev.py stop`` then stops
the embedded PostgreSQL; run while the stack is up, it stops the stack first.
"""

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from rutter_pipeline.warehouse.embedded import stop_embedded_postgres

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BANNER_TIMEOUT = 240  # a loaded 2-core machine: the embedded PostgreSQL's initdb, then Dagster's start
STOP_BOUND = 30  # "within seconds", with room for a busy machine (benchmarks/RESULTS.md: 4-10 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Dev:
    proc: subprocess.Popen
    state: Path
    out: Path
    err: Path
    port: int
    children: list[psutil.Process]  # as the banner showed: what the stop must end

    def stdout(self) -> str:
        return self.out.read_text()

    def diagnostics(self) -> str:
        log = self.state / "dev.log"
        tail = log.read_text()[-4000:] if log.exists() else "(no dev.log)"
        return f"stdout:\n{self.stdout()}\nstderr:\n{self.err.read_text()}\ndev.log:\n{tail}"


def start_dev(tmp_path: Path) -> Dev:
    state = tmp_path / "state"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_"))}
    env["RUTTER_PIPELINE_STATE_DIR"] = str(state)
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    cmd = [sys.executable, str(ROOT / "dev.py"), "start", "--port", str(port), "--connections", "1"]
    with out.open("w") as o, err.open("w") as e:
        # A session of its own, as a terminal gives a foreground job: killpg on it is a Ctrl-C.
        proc = subprocess.Popen(
            [*cmd, "--history-days", "2"], cwd=ROOT, env=env, stdout=o, stderr=e, start_new_session=True
        )
    dev = Dev(proc, state, out, err, port, [])
    deadline = time.monotonic() + BANNER_TIMEOUT
    while "rutter-pipeline dev is up" not in dev.stdout():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                dev.children = psutil.Process(proc.pid).children(recursive=True)
            stop(dev)
            raise AssertionError(f"no banner (exit code {proc.returncode}):\n{dev.diagnostics()}")
        time.sleep(0.5)
    dev.children = psutil.Process(proc.pid).children(recursive=True)
    return dev


def listening_ports(processes: list[psutil.Process]) -> set[int]:
    ports = set()
    for proc in processes:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                ports.add(conn.laddr.port)
    return ports


def stop(dev: Dev) -> None:
    """Teardown whatever the test left: dev.py's group, each child and its group, the embedded server."""
    groups = {dev.proc.pid}
    for child in dev.children:
        with contextlib.suppress(ProcessLookupError):  # it stopped, as it should
            groups.add(os.getpgid(child.pid))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(pgid, signal.SIGKILL)
    for child in dev.children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    dev.proc.wait()
    stop_embedded_postgres(dev.state / "postgres")


def assert_stopped_cleanly(dev: Dev, ports: set[int], started: float) -> None:
    remaining = dev.children
    while remaining and time.monotonic() - started < STOP_BOUND:
        time.sleep(0.2)
        remaining = [p for p in remaining if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not remaining, [" ".join(p.cmdline())[:120] for p in remaining]
    assert dev.proc.wait(timeout=max(1, STOP_BOUND - (time.monotonic() - started))) == 0, dev.diagnostics()
    assert time.monotonic() - started < STOP_BOUND
    assert not {port for port in ports if listening(port)}
    stdout, stderr = dev.stdout(), dev.err.read_text()
    assert "Traceback" not in stdout + stderr, dev.diagnostics()
    assert stderr.strip() == "", dev.diagnostics()
    assert stdout.rstrip().endswith("stopped"), dev.diagnostics()


def assert_banner(dev: Dev) -> None:
    """The terminal shows the banner and no setup logs; the setup logs are in dev.log."""
    stdout = dev.stdout()
    lines = stdout.strip().splitlines()
    assert len(lines) <= 10, stdout  # a start line and the banner: nothing of initdb, migrations, Dagster
    assert f"Dagster UI: http://127.0.0.1:{dev.port}" in stdout
    assert re.search(r"sandbox: http://127\.0\.0\.1:\d+/versioned", stdout)
    assert "Ctrl-C" in stdout and "dev.py stop" in stdout
    log = (dev.state / "dev.log").read_text()
    assert "initdb" in log and "Serving dagster-webserver" in log
    # the psql command the banner shows opens the warehouse
    psql = next(line.split("warehouse:", 1)[1] for line in lines if "warehouse:" in line)
    result = subprocess.run(
        [*shlex.split(psql), "-Atc", "SELECT count(*) FROM rutter.connections"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip().isdigit(), result


def postmaster(dev: Dev) -> psutil.Process:
    pid = int((dev.state / "postgres" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def dev_py_stop(dev: Dev) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_"))}
    env["RUTTER_PIPELINE_STATE_DIR"] = str(dev.state)
    return subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_ctrl_c_stops_every_child_without_a_traceback(tmp_path: Path) -> None:
    dev = start_dev(tmp_path)
    try:
        assert_banner(dev)
        names = " ".join(" ".join(p.cmdline()) for p in dev.children)
        for part in ("rutter_pipeline.sandbox", "dagster dev", "dagster_webserver", "dagster._daemon", "code-server"):
            assert part in names, names
        ports = listening_ports([psutil.Process(dev.proc.pid), *dev.children])
        assert {dev.port} < ports  # the UI, and the sandbox's and receiver's ports besides
        started = time.monotonic()
        os.killpg(dev.proc.pid, signal.SIGINT)  # what a terminal sends its foreground job on Ctrl-C
        assert_stopped_cleanly(dev, ports, started)
        # the embedded PostgreSQL is still up, for the next start and for psql
        assert postmaster(dev).is_running()
    finally:
        stop(dev)


def test_sigterm_to_dev_py_stops_every_child_and_dev_py_stop_stops_postgres(tmp_path: Path) -> None:
    dev = start_dev(tmp_path)
    try:
        ports = listening_ports([psutil.Process(dev.proc.pid), *dev.children])
        started = time.monotonic()
        dev.proc.send_signal(signal.SIGTERM)  # a supervisor's stop: dev.py alone
        assert_stopped_cleanly(dev, ports, started)

        server = postmaster(dev)
        result = dev_py_stop(dev)
        assert result.returncode == 0 and "stopped" in result.stdout, result
        assert not (dev.state / "postgres" / "postmaster.pid").exists()
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        stop(dev)


def test_dev_py_stop_stops_a_running_stack_then_postgres(tmp_path: Path) -> None:
    dev = start_dev(tmp_path)
    try:
        ports = listening_ports([psutil.Process(dev.proc.pid), *dev.children])
        server = postmaster(dev)
        started = time.monotonic()
        result = dev_py_stop(dev)
        assert result.returncode == 0, result
        assert "stopping rutter-pipeline dev" in result.stdout and "PostgreSQL" in result.stdout, result
        assert_stopped_cleanly(dev, ports, started)
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        stop(dev)


def test_dev_with_its_ui_port_taken_says_so_and_exits(tmp_path: Path) -> None:
    """Dagster's webserver only logs a port it cannot bind: dev checks first rather than wait forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_"))}
        env["RUTTER_PIPELINE_STATE_DIR"] = str(tmp_path / "state")
        result = subprocess.run(
            [sys.executable, str(ROOT / "dev.py"), "start", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "dev.py stop" in result.stderr, result
    assert "Traceback" not in result.stdout + result.stderr, result
    assert not (tmp_path / "state" / "postgres").exists()  # nothing was started
