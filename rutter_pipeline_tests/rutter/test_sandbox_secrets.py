"""Against the sandbox: no token or secret in logs (urllib3 DEBUG included) or exceptions on error paths."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.rutter import InvalidCredentials, NotFound, RetriesExhausted, RutterClient, RutterError
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline_tests.rutter.conftest import ClientFactory
from rutter_pipeline_tests.rutter.secrets_check import assert_no_secret, exception_texts

WINDOW = day_window_ms(date(2026, 1, 14))
WRONG_SECRET = "wrong-secret-that-must-not-leak"
UNKNOWN_TOKEN = "access-sandbox-11111111-2222-3333-4444-555555555555"

# name -> (client overrides, faults to inject, the failing call, expected error)
Scenario = tuple[dict, dict, Callable[[RutterClient, str], object], type[RutterError]]
SCENARIOS: dict[str, Scenario] = {
    "401-secret": (
        {"client_secret": WRONG_SECRET},
        {},
        lambda c, t: list(c.iter_created(ORDERS, t, *WINDOW)),
        InvalidCredentials,
    ),
    "401-token": (
        {},
        {},
        lambda c, _t: list(c.iter_created(ORDERS, UNKNOWN_TOKEN, *WINDOW)),
        InvalidCredentials,
    ),
    "404": ({}, {}, lambda c, t: c.get_record(ORDERS, t, "no-such-order"), NotFound),
    "5xx-exhausted": (
        {"max_attempts": 2},
        {"rate_5xx": 1.0},
        lambda c, t: list(c.iter_created(ORDERS, t, *WINDOW, fragments=3)),
        RetriesExhausted,
    ),
    "timeout": (
        {"max_attempts": 2, "read_timeout_s": 0.2},
        {"delay_seconds": 0.5},
        lambda c, t: c.get_store(t),
        RetriesExhausted,
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_error_paths_leak_nothing(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    overrides, faults, call, expected = SCENARIOS[name]
    conn = fast_sandbox.control.create_connection(orders_per_day=5, history_days=2)
    client = client_for(fast_sandbox, **overrides)
    if faults:
        fast_sandbox.control.set_faults(**faults)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(expected) as info:
        call(client, conn["access_token"])
    fast_sandbox.control.clear_faults()
    secrets = [conn["access_token"], UNKNOWN_TOKEN, fast_sandbox.client_secret, WRONG_SECRET]
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # DEBUG capture really ran
    assert_no_secret(secrets, caplog.text, *(r.getMessage() for r in caplog.records))
    assert_no_secret(secrets, *exception_texts(info.value), repr(client))
