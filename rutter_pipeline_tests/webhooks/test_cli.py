"""``rutter-pipeline webhooks serve`` as a user runs it: a real process, its own environment."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rutter_pipeline.webhooks.cli import READY_PREFIX
from rutter_pipeline_tests.webhooks.helpers import SECRET, TOKEN, connection_event, post, stored_rows

pytestmark = pytest.mark.postgres

COMMAND = [str(Path(sys.executable).parent / "rutter-pipeline"), "webhooks", "serve", "--port", "0"]


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_PG_URL"))}
    return {**env, **values}


def test_serve_refuses_to_start_without_the_client_secret(warehouse: str) -> None:
    proc = subprocess.run(COMMAND, env=environment(WAREHOUSE_URL=warehouse), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "RUTTER_CLIENT_SECRET is not set" in proc.stderr


def test_serve_refuses_to_start_without_a_token_key_for_its_own_warehouse(warehouse: str) -> None:
    proc = subprocess.run(
        COMMAND, env=environment(WAREHOUSE_URL=warehouse, RUTTER_CLIENT_SECRET=SECRET), capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "RUTTER_TOKEN_KEY is not set" in proc.stderr


def test_serve_stores_signed_webhooks(warehouse: str) -> None:
    proc = subprocess.Popen(
        COMMAND,
        env=environment(
            WAREHOUSE_URL=warehouse, RUTTER_CLIENT_SECRET=SECRET, RUTTER_TOKEN_KEY=os.environ["RUTTER_TOKEN_KEY"]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=60)
            if line.startswith(READY_PREFIX):
                url = line[len(READY_PREFIX) :].strip()
        assert post(url, connection_event()).status_code == 200
        assert post(url, connection_event(), secret="wrong").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    text = "".join(output)
    assert len(stored_rows(warehouse)) == 1
    assert "POST /webhooks/rutter HTTP/1.1" in text  # access log, path only
    assert SECRET not in text and TOKEN not in text
