"""Several OS processes ingesting from one sandbox under one org-wide limit (test and benchmark).

The sandbox runs in this process with its arrivals logged by an ASGI wrapper: the times are taken
when the sandbox's handler sees each request, just before its own rate limiter counts it, so the
busiest 10 s window computed from them is the rate *as the sandbox counts it*. The workers are
spawned processes (no state shared with the parent but the limit's store and HTTP).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import uvicorn

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter import RutterClient
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.sandbox import SandboxConfig, SandboxControl, SandboxHandle
from rutter_pipeline.sandbox.app import build_app
from rutter_pipeline.sandbox.server import listening_socket, uvicorn_config

WORKER_TIMEOUT_S = 120.0


def max_in_window(times: list[float], window_s: float) -> int:
    """Most events in any window of ``window_s`` seconds (sliding over the events)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class ArrivalLog:
    """ASGI wrapper: the monotonic time of every Rutter-surface request the sandbox receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.arrivals: list[float] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/versioned/"):
            self.arrivals.append(time.monotonic())
        await self.app(scope, receive, send)


@contextmanager
def logged_sandbox(config: SandboxConfig) -> Iterator[tuple[SandboxHandle, ArrivalLog]]:
    """The sandbox on a loopback port, in a thread of this process, with its arrivals logged."""
    app, _ = build_app(config)
    logged = ArrivalLog(app)
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(logged))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox", daemon=True)
    thread.start()
    root_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    control = SandboxControl(root_url)
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.02)
        control.health()
        yield SandboxHandle(root_url, root_url + "/versioned", config.client_id, config.client_secret, control), logged
    finally:
        control.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Job:
    """What one worker process ingests, and under which limit."""

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    rate_limit_url: str | None = field(repr=False)
    max_requests_per_10s: int
    last_day: date
    days: int
    page_limit: int = 10
    connection_share: float = 0.5
    bulk_share: float = 1.0
    # "created": a range load of ``days`` (bulk traffic); "updated": an incremental sync of the records
    # updated since the start of those days (sync traffic), started ``delay_s`` after the others.
    mode: str = "created"
    delay_s: float = 0.0


def job_for(
    sandbox: SandboxHandle,
    connection: dict[str, Any],
    rate_limit_url: str | None,
    max_requests_per_10s: int,
    last_day: date,
    **kwargs: Any,
) -> Job:
    """The job of one sandbox connection (``kwargs``: the other ``Job`` fields)."""
    return Job(
        sandbox.base_url,
        sandbox.client_id,
        sandbox.client_secret,
        connection["access_token"],
        rate_limit_url,
        max_requests_per_10s,
        last_day,
        **kwargs,
    )


def ingest_worker(job: Job, ready: Any, go: Any, results: Any) -> None:
    """Spawned process: build the client (and its shared limiter), wait for the start, ingest orders."""
    signalled = False
    try:
        client = RutterClient(
            base_url=job.base_url,
            client_id=job.client_id,
            client_secret=job.client_secret,
            max_requests_per_10s=job.max_requests_per_10s,
            rate_limit_url=job.rate_limit_url,
            connection_share=job.connection_share,
            bulk_share=job.bulk_share,
            page_limit=job.page_limit,
            backoff_initial_s=0.2,
            max_attempts=3,
        )
        first_day = job.last_day - timedelta(days=job.days - 1)
        start_ms, end_ms = day_window_ms(first_day)[0], day_window_ms(job.last_day)[1]
        ready.put(True)
        signalled = True
        go.wait(60)
        time.sleep(job.delay_s)
        started = time.monotonic()
        if job.mode == "updated":
            pages = client.iter_updated(ORDERS, job.access_token, start_ms)
        else:
            pages = client.iter_created(ORDERS, job.access_token, start_ms, end_ms)
        records = sum(len(p.records) for p in pages)
        ended = time.monotonic()
        stats = client.stats.snapshot()
        # CLOCK_MONOTONIC is system-wide on Linux: the parent compares these times across processes.
        stats.update(
            records_fetched=records, seconds=round(ended - started, 2), started=started, ended=ended, mode=job.mode
        )
        results.put(stats)
        client.close()
    except BaseException as exc:  # reported to the parent, which fails loudly
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        if not signalled:
            ready.put(False)
        raise


def run_workers(jobs: list[Job]) -> list[dict[str, Any]]:
    """One spawned process per job, released together once every one has built its client."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=ingest_worker, args=(job, ready, go, results), daemon=True) for job in jobs]
    for p in procs:
        p.start()
    out: list[dict[str, Any]] = []
    try:
        for _ in procs:
            try:
                ready.get(timeout=60)
            except queue.Empty:
                break  # a worker failed while starting; its error is in results
        go.set()
        for _ in procs:
            out.append(results.get(timeout=WORKER_TIMEOUT_S))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return out
