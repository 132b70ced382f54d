"""A flaky upstream (the sandbox's fault injection) is ridden out with every record delivered once."""

from __future__ import annotations

import time
from datetime import date

import pytest

from rutter_pipeline.entities import ORDERS, TRANSACTIONS
from rutter_pipeline.rutter import RateLimited, RetriesExhausted, ServerError
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline_tests.rutter.conftest import ClientFactory
from rutter_pipeline_tests.rutter.sandbox_truth import assert_same_records, expected_created, records_of
from rutter_pipeline_tests.rutter.secrets_check import assert_no_secret, exception_texts

WINDOW = (day_window_ms(date(2026, 1, 13))[0], day_window_ms(date(2026, 1, 14))[1])


@pytest.fixture
def conn(fast_sandbox: SandboxHandle) -> dict:
    return fast_sandbox.control.create_connection(platform="SHOPIFY", orders_per_day=15, history_days=5)


@pytest.mark.parametrize(
    ("faults", "counter"),
    [
        ({"rate_429": 0.3}, "429"),
        ({"rate_429": 0.3, "retry_after_seconds": 0.05}, "429"),
        ({"rate_5xx": 0.2, "burst_5xx": 4}, "5xx"),
        ({"rate_truncate": 0.3}, "truncate"),
        ({"rate_drop": 0.3}, "drop"),
    ],
    ids=["429", "429-retry-after", "5xx-bursts", "truncated", "dropped"],
)
def test_faults_are_ridden_out_exactly_once(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, conn: dict, faults: dict, counter: str
) -> None:
    client = client_for(fast_sandbox, page_limit=4)
    expected = {
        s.name: expected_created(fast_sandbox, s, conn["connection_id"], *WINDOW) for s in (ORDERS, TRANSACTIONS)
    }
    fast_sandbox.control.set_faults(seed=7, **faults)
    for spec in (ORDERS, TRANSACTIONS):
        got = records_of(client.iter_created(spec, conn["access_token"], *WINDOW, fragments=3))
        assert_same_records(got, expected[spec.name])
    injected = fast_sandbox.control.stats()["faults_injected"]
    fast_sandbox.control.clear_faults()
    assert injected.get(counter, 0) + injected.get("burst_5xx", 0) >= 3, injected
    stats = client.stats.snapshot()
    assert stats["retries"] >= 3
    assert stats["requests"] == stats["pages"] + sum(stats["errors"].values())
    if counter == "429":
        assert stats["throttled"] == stats["errors"]["RateLimited"] > 0


def test_retry_after_from_the_sandbox_is_waited_out(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, conn: dict
) -> None:
    client = client_for(fast_sandbox, max_attempts=3, max_retry_after_s=5)
    fast_sandbox.control.set_faults(rate_429=1.0, retry_after_seconds=0.3, endpoints=["/store"])
    started = time.monotonic()
    with pytest.raises(RetriesExhausted) as info:
        client.get_store(conn["access_token"])
    assert time.monotonic() - started >= 0.6  # two waits of Retry-After, not the 10 ms backoff
    assert isinstance(info.value.last, RateLimited) and info.value.last.retry_after == 0.3
    fast_sandbox.control.clear_faults()
    assert client.get_store(conn["access_token"])["store_name"] == conn["store_name"]


def test_persistent_5xx_exhausts_retries_with_a_clear_redacted_message(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, conn: dict
) -> None:
    client = client_for(fast_sandbox, max_attempts=3)
    fast_sandbox.control.set_faults(rate_5xx=1.0)
    with pytest.raises(RetriesExhausted) as info:
        list(client.iter_created(ORDERS, conn["access_token"], *WINDOW, fragments=3))
    err = info.value
    assert isinstance(err.last, ServerError) and err.attempts == 3
    assert str(err).startswith("gave up after 3 attempts")
    assert "access_token=***" in str(err)
    assert_no_secret([conn["access_token"], fast_sandbox.client_secret], *exception_texts(err))
