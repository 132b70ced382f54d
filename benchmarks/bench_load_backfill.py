"""Load (issue 19): N connections' last 30 days backfilled at once under the daemon, at N = 50.

The fault suite's ``reliability/test_load.py`` runs 10 connections (small merchants, 3 orders a day)
through a real ``dagster-daemon`` on the project's ``dagster.yaml`` (at most 4 runs at once) with the
org rate limit's request log shared in the warehouse PostgreSQL, and compares every connection's days
with the sandbox's ground truth. This runs that same test with ``RUTTER_LOAD_CONNECTIONS=N`` (it is too
slow for the suite at 50 on 2 cores) and prints its figures and wall time:

    TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python benchmarks/bench_load_backfill.py \
        --connections 50
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    env = {**os.environ, "RUTTER_LOAD_CONNECTIONS": str(args.connections)}
    env.pop("RUTTER_RATE_LIMIT_URL", None)  # the default, shared limiter (the test makes sure of it too)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as base:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={base}/pt", "-n", "0",
                   "-q", "-s", "rutter_pipeline_tests/reliability/test_load.py"]  # fmt: skip
        began = time.monotonic()
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - began
    lines = proc.stdout.splitlines()
    for line in lines:
        if line.startswith("load:") or " passed" in line or " failed" in line or line.startswith("test_load.py"):
            print(line)
    print(f"pytest exit {proc.returncode}, {elapsed:.0f} s wall in all (session start and teardown included)")
    if proc.returncode:
        print("\n".join(lines[-60:]))
        print(proc.stderr[-3000:], file=sys.stderr)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
