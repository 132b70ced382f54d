"""``rutter-pipeline sandbox`` starts a server whose printed connections ``GET /connections`` lists."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from rutter_pipeline.sandbox.server import READY_PREFIX


def _command() -> list[str]:
    script = Path(sys.executable).parent / "rutter-pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rutter_pipeline.cli"]


def test_cli_serves_three_ready_connections(tmp_path):
    out = tmp_path / "out.txt"
    args = ["sandbox", "--port", "0", "--client-id", "demo", "--client-secret", "demo-secret", "--connections", "3"]
    with out.open("w") as sink:
        proc = subprocess.Popen(_command() + args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while READY_PREFIX not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.05)
        text = out.read_text()
        base_url = re.search(re.escape(READY_PREFIX) + r"(\S+)", text).group(1)
        printed = dict(re.findall(r"connection (\S+) access_token (\S+)", text))
        assert len(printed) == 3
        resp = requests.get(
            base_url + "/connections",
            auth=("demo", "demo-secret"),
            headers={"X-Rutter-Version": "2023-03-14"},
            timeout=10,
        )
        listed = {c["id"]: c["access_token"] for c in resp.json()["connections"]}
        assert listed == printed
        for token in printed.values():
            status = requests.get(
                base_url + "/connections/status",
                params={"access_token": token},
                auth=("demo", "demo-secret"),
                headers={"X-Rutter-Version": "2023-03-14"},
                timeout=10,
            ).json()
            assert status["status"]["is_ready"] is True
        assert "demo-secret" not in out.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_run_sandbox_in_a_subprocess():
    from rutter_pipeline.sandbox import SandboxConfig, run_sandbox
    from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW

    with run_sandbox(SandboxConfig(now=SANDBOX_NOW, connections=2), subprocess=True) as sb:
        conns = sb.control.list_connections()
        assert len(conns) == 2 and all(c["state"] == "ready" for c in conns)
        assert sb.base_url == sb.root_url + "/versioned"
        assert sb.control.now() == SANDBOX_NOW
    assert "demo-secret" not in repr(sb)
