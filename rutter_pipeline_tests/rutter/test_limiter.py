"""The shared client-side limiter keeps the request rate under its limit across threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter import RutterClient
from rutter_pipeline.rutter.limiter import RequestLimiter, shared_limiter
from rutter_pipeline_tests.rutter.conftest import ClientFactory
from rutter_pipeline_tests.rutter.org_limit_run import max_in_window
from rutter_pipeline_tests.rutter.scripted_server import Reply, ScriptedServer


def run_threads(targets: list[Callable[[], None]]) -> float:
    """Run the targets on threads at once; return the seconds until the last one finished."""
    threads = [threading.Thread(target=t) for t in targets]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def test_limiter_blocks_rather_than_fails_and_keeps_the_rate() -> None:
    limiter = RequestLimiter(10, period_s=0.5)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    elapsed = run_threads([worker] * 4)
    assert len(stamps) == 40
    assert max_in_window(stamps, 0.5) <= 10
    assert elapsed >= 1.5  # 40 requests at 10 per 0.5 s need at least three more windows


def test_one_limiter_per_org_and_rate() -> None:
    a = shared_limiter("http://x/versioned/", "org", 450)
    assert shared_limiter("http://x/versioned", "org", 450) is a
    assert shared_limiter("http://x/versioned", "other-org", 450) is not a
    assert a.max_requests == 450 and a.period_s == 10.0


def test_clients_of_one_org_share_the_limit_across_threads(scripted: ScriptedServer, client_for: ClientFactory) -> None:
    """Two clients, three threads each, 60 requests: the server never sees more than 20 per second."""
    body = {"connection": {}, "orders": [], "next_cursor": None}
    scripted.handler = lambda _seen: Reply(body=body)
    clients = [
        client_for(scripted, client_id="limited-org", max_requests_per_10s=20, limiter_period_s=1.0) for _ in range(2)
    ]

    def worker(client: RutterClient) -> None:
        for _ in range(10):
            list(client.iter_pages(ORDERS, "access-limit-token"))

    elapsed = run_threads([partial(worker, c) for c in clients for _ in range(3)])
    arrivals = [s.at for s in scripted.seen]
    assert len(arrivals) == 60
    assert max_in_window(arrivals, 1.0) <= 20
    assert elapsed >= 2.0  # 60 requests at 20/s: two full waits at least
    waited = sum(c.stats.snapshot()["limiter_wait_s"] for c in clients)
    assert waited > 1.0
