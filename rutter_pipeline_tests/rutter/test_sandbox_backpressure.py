"""Pages are fetched only as fast as they are consumed: memory stays flat however big the window."""

from __future__ import annotations

import time
from datetime import date

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline_tests.rutter.conftest import ClientFactory

WINDOW = day_window_ms(date(2026, 1, 14))


def requests_to_orders(handle: SandboxHandle) -> int:
    by_endpoint = handle.control.stats()["requests"]
    return sum(n for path, statuses in by_endpoint.items() if path.endswith("/orders") for n in statuses.values())


def test_a_paused_consumer_pauses_the_fetchers(fast_sandbox: SandboxHandle, client_for: ClientFactory) -> None:
    conn = fast_sandbox.control.create_connection(orders_per_day=40, history_days=3)
    client = client_for(fast_sandbox, page_limit=1, queued_pages=2)
    pages = client.iter_created(ORDERS, conn["access_token"], *WINDOW, fragments=3)
    next(pages)
    time.sleep(0.3)  # give the fetch threads every chance to run ahead
    ahead = requests_to_orders(fast_sandbox)
    # one consumed + two queued + at most one held by each of the three blocked fetch threads
    assert ahead <= 1 + 2 + 3, ahead
    pages.close()  # closing early cancels the fetch threads
    time.sleep(0.2)
    assert requests_to_orders(fast_sandbox) == ahead


def test_iter_pages_requests_one_page_at_a_time(fast_sandbox: SandboxHandle, client_for: ClientFactory) -> None:
    conn = fast_sandbox.control.create_connection(orders_per_day=40, history_days=3)
    client = client_for(fast_sandbox, page_limit=5)
    pages = client.iter_pages(ORDERS, conn["access_token"], created_at_min=WINDOW[0], created_at_max=WINDOW[1])
    next(pages)
    next(pages)
    assert requests_to_orders(fast_sandbox) == 2
    rest = sum(1 for _ in pages)
    assert rest >= 5 and requests_to_orders(fast_sandbox) == 2 + rest
