"""``benchmarks/scale_e2e.py`` at N=3: the whole path through a real daemon, checked against the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent


def test_scale_e2e_at_three_connections(pg_server_url):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "scale_e2e.py"),
        "--connections",
        "3",
        "--timeout",
        "100",
        "--pg-url",
        pg_server_url,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["connections"] == 3
    assert set(result) >= {"daily_load", "incremental", "initial_update_to_run_s", "rss_mb"}
    daily, incremental = result["daily_load"], result["incremental"]
    for phase in (daily, incremental):
        assert set(phase) >= {"seconds", "runs", "failed_runs", "cpu_seconds"}
        assert phase["runs"] >= 1 and phase["failed_runs"] == 0 and phase["cpu_seconds"] > 0
    assert daily["orders_expected"] > 200 and daily["orders_loaded"] == daily["orders_expected"]
    assert incremental["orders_changed_at_sandbox"] > 0 and incremental["changes_arrived"] is True
    assert result["initial_update_to_run_s"] > 0
    assert result["rss_mb"]["daemon"] > 0 and result["rss_mb"]["run_worker"] > 0
