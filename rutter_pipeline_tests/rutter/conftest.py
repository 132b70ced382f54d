"""Fixtures of the client tests: the scripted loopback server, a fast sandbox and a client factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rutter_pipeline.rutter import RutterClient
from rutter_pipeline.sandbox import SandboxConfig, SandboxHandle
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.rutter.scripted_server import ScriptedServer

# Credentials the scripted server is addressed with (it accepts anything).
SCRIPTED_CLIENT_ID = "org-id"
SCRIPTED_SECRET = "scripted-client-secret-value"

FAST_RETRIES = {
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "max_retry_after_s": 0.5,
    "connect_timeout_s": 2.0,
    "read_timeout_s": 5.0,
}

ClientFactory = Callable[..., RutterClient]


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as server:
        yield server


@pytest.fixture
def fast_sandbox(sandbox_factory: Callable[[SandboxConfig], SandboxHandle]) -> SandboxHandle:
    """The test sandbox (fixed clock, seed 1) without Rutter's 500/10 s limit, for request-heavy tests."""
    return sandbox_factory(SandboxConfig(now=SANDBOX_NOW, seed=1, connections=0, rate_limit_per_10s=1_000_000))


@pytest.fixture
def client_for() -> Iterator[ClientFactory]:
    """Clients for a sandbox or the scripted server: fast retries, a high client-side limit; closed after.

    ``client_for(target, **overrides)`` takes the base URL (and, from a sandbox, the credentials)
    from ``target``; ``overrides`` are ``ClientConfig`` fields.
    """
    clients: list[RutterClient] = []

    def make(target: SandboxHandle | ScriptedServer, **overrides: Any) -> RutterClient:
        fields: dict[str, Any] = {
            "base_url": target.base_url,
            "client_id": getattr(target, "client_id", SCRIPTED_CLIENT_ID),
            "client_secret": getattr(target, "client_secret", SCRIPTED_SECRET),
            "max_requests_per_10s": 1_000_000,
            "max_attempts": 10,
            **FAST_RETRIES,
            **overrides,
        }
        client = RutterClient(**fields)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def scripted_client(scripted: ScriptedServer, client_for: ClientFactory) -> RutterClient:
    return client_for(scripted, max_attempts=4)
