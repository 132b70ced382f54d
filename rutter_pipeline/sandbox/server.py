"""``run_sandbox``: start the sandbox on a loopback port, in this process or in a child process.

In-process (a uvicorn server in a background thread) is what tests use: fast to start, and the
server shares nothing with the test but HTTP. ``subprocess=True`` runs ``python -m
rutter_pipeline.sandbox`` so that benchmarks and demos give the sandbox a core of its own.
Either way the call returns once the server answers, and stops it on exit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess as sp
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import uvicorn

from rutter_pipeline.sandbox.app import build_app
from rutter_pipeline.sandbox.config import SandboxConfig, config_to_dict
from rutter_pipeline.sandbox.control import SandboxControl

READY_PREFIX = "Rutter sandbox listening on "
START_TIMEOUT = 30.0


@dataclass
class SandboxHandle:
    root_url: str  # "http://127.0.0.1:PORT"
    base_url: str  # root_url + "/versioned" (what RUTTER_BASE_URL points at)
    client_id: str
    client_secret: str
    control: SandboxControl

    def __repr__(self) -> str:  # keep the secret out of test output and logs
        return f"SandboxHandle(root_url={self.root_url!r}, client_id={self.client_id!r})"


@contextmanager
def _serving(root_url: str, config: SandboxConfig, alive: Callable[[], bool]) -> Iterator[SandboxHandle]:
    """Wait until the server at ``root_url`` answers, then hand out a handle to it."""
    _wait_until_up(root_url, alive)
    handle = SandboxHandle(
        root_url, root_url + "/versioned", config.client_id, config.client_secret, SandboxControl(root_url)
    )
    try:
        yield handle
    finally:
        handle.control.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket already listening, so clients may connect as soon as its address is known."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _wait_until_up(root_url: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the sandbox server stopped while starting")
        try:
            if requests.get(f"{root_url}/_sandbox/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"the sandbox did not answer at {root_url} within {START_TIMEOUT} s")


def uvicorn_config(app, *, log_level: str = "warning") -> uvicorn.Config:
    # No access log: request lines carry access tokens in their query strings.
    return uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=30)


@contextmanager
def _in_process(config: SandboxConfig, host: str, port: int) -> Iterator[SandboxHandle]:
    app, _ = build_app(config)
    sock = listening_socket(host, port)
    server = uvicorn.Server(uvicorn_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox-server", daemon=True)
    thread.start()
    root_url = f"http://{host}:{sock.getsockname()[1]}"
    try:
        with _serving(root_url, config, thread.is_alive) as handle:
            yield handle
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def _child_process(config: SandboxConfig, host: str, port: int) -> Iterator[SandboxHandle]:
    with tempfile.TemporaryDirectory(prefix="rutter-sandbox-") as tmp:
        out_path = Path(tmp) / "stdout.txt"
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config_to_dict(config)))
        cmd = [
            sys.executable,
            "-m",
            "rutter_pipeline.sandbox",
            "--host",
            host,
            "--port",
            str(port),
            "--config-json",
            str(cfg_path),
        ]
        with out_path.open("w") as out:
            # A session of its own: a terminal's Ctrl-C reaches only the parent, which stops it in order.
            proc = sp.Popen(
                cmd, stdout=out, stderr=None, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True
            )
        try:
            root_url = None
            deadline = time.monotonic() + START_TIMEOUT
            while root_url is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"the sandbox process exited with {proc.returncode} while starting")
                if time.monotonic() > deadline:
                    raise TimeoutError("the sandbox process did not report its address")
                for line in out_path.read_text().splitlines():
                    if line.startswith(READY_PREFIX):
                        root_url = line[len(READY_PREFIX) :].strip().removesuffix("/versioned")
                time.sleep(0.02)
            with _serving(root_url, config, lambda: proc.poll() is None) as handle:
                yield handle
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except sp.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def run_sandbox(
    config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, subprocess: bool = False
) -> Iterator[SandboxHandle]:
    """Run a sandbox until the ``with`` block ends. ``port=0`` picks a free port."""
    config = config or SandboxConfig()
    runner = _child_process if subprocess else _in_process
    with runner(config, host, port) as handle:
        yield handle
