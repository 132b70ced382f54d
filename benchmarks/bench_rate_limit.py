"""Org-wide rate limit across processes: N processes ingest different connections from one sandbox.

The sandbox enforces a low limit (default 60 requests / 10 s) and logs when each request arrives;
every process's client limits the org to fewer (default 50 / 10 s) through the shared store
(``--rate-limit-url``: default ``RUTTER_RATE_LIMIT_URL``, else ``WAREHOUSE_URL``, else the embedded
PostgreSQL). Reported: the busiest 10 s window as the sandbox counts arrivals, the 429s it sent,
the requests in all, and per process its requests, records and time spent waiting on the limiter.

    .venv/bin/python benchmarks/bench_rate_limit.py --processes 3 --json

``--fair-share`` measures the bulk share instead: ``--processes`` range loads (bulk traffic) saturate
the org limit, and an incremental sync (sync traffic) starts once they do. It runs three times: the
sync alone, beside the loads with no bulk cap (``--bulk-share 1``), and beside them with the cap.
Reported per case: the sync's seconds and its requests per 10 s while the loads ran.

    .venv/bin/python benchmarks/bench_rate_limit.py --fair-share --processes 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from rutter_pipeline.rutter.rate_buckets import RATE_LIMIT_URL_ENV, resolve_backend
from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline_tests.rutter.org_limit_run import Job, job_for, logged_sandbox, max_in_window, run_workers

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)


def default_store_url() -> str:
    url = os.environ.get(RATE_LIMIT_URL_ENV) or os.environ.get("WAREHOUSE_URL")
    if url:
        return url
    from rutter_pipeline.settings import Settings
    from rutter_pipeline.warehouse.embedded import warehouse_url

    return warehouse_url(Settings.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--sandbox-limit", type=int, default=60, help="the sandbox's requests per 10 s")
    parser.add_argument("--org-limit", type=int, default=50, help="the client-side org limit per 10 s")
    parser.add_argument("--days", type=int, default=8, help="days of orders each process ingests")
    parser.add_argument("--orders-per-day", type=int, default=40)
    parser.add_argument("--page-limit", type=int, default=10, help="small pages: many requests")
    parser.add_argument("--connection-share", type=float, default=0.5)
    parser.add_argument("--rate-limit-url", default=None, help="postgresql://, redis:// or memory")
    parser.add_argument("--bulk-share", type=float, default=0.7, help="the bulk share of --fair-share")
    parser.add_argument("--fair-share", action="store_true", help="measure the bulk share (see above)")
    parser.add_argument("--sync-days", type=int, default=5, help="days of updates the sync reads (--fair-share)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    if args.fair_share:
        return fair_share(args)

    store_url = args.rate_limit_url or default_store_url()
    backend = resolve_backend(store_url)
    config = SandboxConfig(
        client_id="bench-org", client_secret="bench-secret", now=NOW, seed=1, rate_limit_per_10s=args.sandbox_limit
    )
    last_day = NOW.date() - timedelta(days=1)
    with logged_sandbox(config) as (sandbox, log):
        conns = [
            sandbox.control.create_connection(orders_per_day=args.orders_per_day, history_days=args.days + 2, seed=i)
            for i in range(args.processes)
        ]
        jobs = [
            job_for(
                sandbox,
                c,
                store_url,
                args.org_limit,
                last_day,
                days=args.days,
                page_limit=args.page_limit,
                connection_share=args.connection_share,
            )
            for c in conns
        ]
        started = time.monotonic()
        results = run_workers(jobs)
        seconds = time.monotonic() - started
        stats = sandbox.control.stats()
    errors = [r["error"] for r in results if "error" in r]
    arrivals = sorted(log.arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    out = {
        "processes": args.processes,
        "store": backend.describe(),
        "limit": args.sandbox_limit,
        "org_limit": args.org_limit,
        "max_requests_any_10s_window": max_in_window(arrivals, 10.0),
        "responses_429": sum(int(by.get("429", 0)) for by in stats["requests"].values()),
        "requests_total": stats["requests_total"],
        "requests_per_s": round(len(arrivals) / span, 2) if span else None,
        "seconds": round(seconds, 2),
        "workers": [
            {k: r.get(k) for k in ("requests", "records_fetched", "throttled", "limiter_wait_s", "seconds")}
            for r in results
            if "error" not in r
        ],
        "errors": errors,
    }
    print(json.dumps(out, indent=None if args.json else 2))
    ok = not errors and out["responses_429"] == 0 and out["max_requests_any_10s_window"] <= args.sandbox_limit
    return 0 if ok else 1


def fair_share(args: argparse.Namespace) -> int:
    """The sync's time and request rate: alone, beside uncapped range loads, beside capped ones."""
    store_url = args.rate_limit_url or default_store_url()
    cases = {"sync_alone": None, "no_bulk_cap": 1.0, "bulk_cap": args.bulk_share}
    out: dict[str, object] = {
        "store": resolve_backend(store_url).describe(),
        "org_limit": args.org_limit,
        "bulk_share": args.bulk_share,
        "loads": args.processes,
    }
    ok = True
    last_day = NOW.date() - timedelta(days=1)
    for name, share in cases.items():
        # A fresh org per case (its own client id): one case's requests do not count in the next.
        config = SandboxConfig(
            client_id=f"fair-{name}-{time.time_ns()}",
            client_secret="bench-secret",
            now=NOW,
            seed=1,
            rate_limit_per_10s=args.sandbox_limit,
        )
        with logged_sandbox(config) as (sandbox, _log):
            loads = 0 if share is None else args.processes
            conns = [
                sandbox.control.create_connection(
                    orders_per_day=args.orders_per_day, history_days=args.days + 2, seed=seed
                )
                for seed in [*range(loads), 100]  # the sync's merchant is the same in every case
            ]

            def job(token: str, mode: str, days: int, delay_s: float, bulk_share: float) -> Job:
                return job_for(
                    sandbox,
                    {"access_token": token},
                    store_url,
                    args.org_limit,
                    last_day,
                    days=days,
                    page_limit=args.page_limit,
                    connection_share=1.0,  # the bulk share alone is measured
                    bulk_share=bulk_share,
                    mode=mode,
                    delay_s=delay_s,
                )

            jobs = [job(c["access_token"], "created", args.days, 0.0, share or 1.0) for c in conns[:loads]]
            # The sync reads the last few days' updates, and starts once the loads have filled the window.
            delay = 3.0 if loads else 0.0
            jobs.append(job(conns[-1]["access_token"], "updated", args.sync_days, delay, share or 1.0))
            results = run_workers(jobs)
            stats = sandbox.control.stats()
        errors = [r["error"] for r in results if "error" in r]
        ok = ok and not errors and sum(int(b.get("429", 0)) for b in stats["requests"].values()) == 0
        sync = next(r for r in results if r.get("mode") == "updated")
        load_end = max((r["ended"] for r in results if r.get("mode") == "created"), default=sync["ended"])
        overlap = min(sync["ended"], load_end) - sync["started"]
        out[name] = {
            "sync_seconds": sync["seconds"],
            "sync_requests": sync["requests"],
            "sync_requests_per_10s": round(10 * sync["requests"] / sync["seconds"], 1) if sync["seconds"] else None,
            "loads_ran_through_the_sync": overlap >= sync["seconds"] - 0.5,
            "load_requests": sum(r["requests"] for r in results if r.get("mode") == "created"),
            "errors": errors,
        }
    print(json.dumps(out, indent=None if args.json else 2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
