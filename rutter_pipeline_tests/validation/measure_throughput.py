"""Measure how fast ``validate_records`` checks realistic orders (docs/architecture.md §8: figures, not guesses).

    .venv/bin/python -m rutter_pipeline_tests.validation.measure_throughput [--orders 50000] [--page 500 5000]

Prints orders/s for one batch of ``--orders`` orders (3 line items each) and for the same orders in
pages (Rutter's pages hold up to 500 records; chunks of several pages amortise pandera's fixed cost
per call), plus ``orjson.loads`` of the same records as a yardstick for the machine (parsing is what
has to happen to every record anyway). Wall time and CPU time are both shown because the test
machine is shared: CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.validation import validate_records
from rutter_pipeline_tests.validation.records import RecordFactory


def best_of(runs: int, work: Callable[[], object]) -> tuple[float, float]:
    """The fastest wall and CPU seconds of ``runs`` runs (the least disturbed run is the fairest)."""
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        work()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return min(wall), min(cpu)


def measure(orders: int, pages: list[int], runs: int) -> dict[str, float]:
    """Orders per second (CPU) for parsing, one batch, and each page size; checks the batch is clean."""
    records = RecordFactory(seed=11).batch("orders", orders)
    blob = orjson.dumps(records)
    report = validate_records(ORDERS, records)
    if not report.passed or len(report.valid) != orders:
        raise SystemExit(f"benchmark data did not validate cleanly: {report.metadata()}")
    runs_of: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads (yardstick)", lambda: orjson.loads(blob)),
        (f"validate, one batch of {orders}", lambda: validate_records(ORDERS, records)),
    ]
    for size in pages:
        batches = [records[i : i + size] for i in range(0, orders, size)]
        runs_of.append((f"validate, pages of {size}", lambda b=batches: [validate_records(ORDERS, p) for p in b]))
    results = {}
    for label, work in runs_of:
        wall, cpu = best_of(runs, work)
        results[label] = orders / cpu
        print(
            f"{label:34s} {wall:7.3f} s wall {orders / wall:>10,.0f} orders/s | "
            f"{cpu:7.3f} s cpu {orders / cpu:>10,.0f} orders/s"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--page", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.orders} orders x 3 line items, best of {args.runs} runs")
    measure(args.orders, args.page, args.runs)


if __name__ == "__main__":
    main()
