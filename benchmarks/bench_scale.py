"""Scale benchmark for N connections: the Dagster side and the end-to-end side, one JSON object.

Runs ``scale_dagster.py`` (N connections x 2 years of history seeded through Dagster's own event
APIs and into ``rutter.load_log``; the UI's partitions view against a real webserver; every sensor
and schedule tick) and then ``scale_e2e.py`` (the sandbox with N connections, a real
``dagster-daemon``: the daily load and the incremental sync of all N, ``INITIAL_UPDATE`` to the
first run, peak RSS), each in its own process so that neither's memory or caches colour the
other, and prints ``{"connections": N, "dagster": {...}, "end_to_end": {...}}``.

    .venv/bin/python benchmarks/bench_scale.py --connections 1000 --pg-url postgresql://postgres@127.0.0.1:5432/postgres

A benchmark, not a test: it prints what it measured and judges nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def last_json_object(output: str) -> dict[str, Any]:
    """The JSON object a part prints last (its processes may log lines before it)."""
    lines = output.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith("{"):
            return json.loads("\n".join(lines[start:]))
    raise ValueError(f"no JSON object in the output: {output[-2000:]}")


def run_part(script: str, args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args], cwd=HERE.parent, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return last_json_object(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--connections", type=int, default=100)
    parser.add_argument("--months", type=int, default=None, help="history of the Dagster side (default: 2 years)")
    parser.add_argument("--pg-url", help="a PostgreSQL server URL to use (default: start an embedded one)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each end-to-end phase may take")
    args = parser.parse_args(argv)
    common = ["--connections", str(args.connections), *(["--pg-url", args.pg_url] if args.pg_url else [])]
    dagster_side = run_part("scale_dagster.py", [*common, *(["--months", str(args.months)] if args.months else [])])
    end_to_end = run_part("scale_e2e.py", [*common, "--timeout", str(args.timeout)])
    print(json.dumps({"connections": args.connections, "dagster": dagster_side, "end_to_end": end_to_end}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
