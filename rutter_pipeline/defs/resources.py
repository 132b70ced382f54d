"""Resources: the Rutter client and the warehouse, configured from the environment (docs/architecture.md §4.1).

Secrets stay out of run config: the org credentials are ``EnvVar``s (Dagster shows the variable's
name, never its value), the warehouse URL is read from the environment when the run starts, and
access tokens are read from the connection registry inside the run.
"""

import os
from functools import cached_property

import dagster as dg
from pydantic import PrivateAttr

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.retries import wait_before_retry
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.embedded import default_urls
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate


class RutterResource(dg.ConfigurableResource):
    """Rutter API access for one run; the client (and its rate limiter) is built once per process."""

    base_url: str
    client_id: str
    client_secret: str
    api_version: str = Settings.api_version
    page_limit: int = Settings.page_limit
    window_fragments: int = Settings.window_fragments
    max_requests_per_10s: int = Settings.max_requests_per_10s
    # Transport limits, tunable per run in the launchpad (``resources.rutter.config``) without a deploy:
    # a slow upstream may need a longer read timeout, a fault test a shorter one and fewer attempts.
    read_timeout_s: float = 60.0
    max_attempts: int = 8
    backoff_initial_s: float = 0.5
    _client: RutterClient | None = PrivateAttr(default=None)

    def client(self) -> RutterClient:
        if self._client is None:
            # From the environment's settings, then this resource's fields: where the org's rate limit is
            # shared (the warehouse by default) and its bulk and per-connection shares are read at run time,
            # like the warehouse URL, because the store's URL may carry a password (not run config). Built
            # from the fields alone, every run limited itself in memory, four runs sending four times the
            # org's limit (found by reliability/test_load.py).
            self._client = RutterClient.from_settings(
                Settings.from_env(),
                base_url=self.base_url,
                client_id=self.client_id,
                client_secret=self.client_secret,
                api_version=self.api_version,
                page_limit=self.page_limit,
                window_fragments=self.window_fragments,
                max_requests_per_10s=self.max_requests_per_10s,
                read_timeout_s=self.read_timeout_s,
                max_attempts=self.max_attempts,
                backoff_initial_s=self.backoff_initial_s,
            )
        return self._client


class WarehouseResource(dg.ConfigurableResource):
    """The PostgreSQL warehouse. ``url`` empty means WAREHOUSE_URL, else the embedded server.

    The URL is resolved inside the run (not put in run config) because it may carry a password.
    The schema is migrated on first use, so a new deployment needs no manual step.
    """

    url: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step of a run uses the warehouse: a retried run waits out its backoff here (defs/retries.py).
        wait_before_retry(context, Settings.from_env().run_retry_delay_seconds)

    @cached_property
    def resolved_url(self) -> str:
        url = self.url or os.environ.get("WAREHOUSE_URL") or default_urls()[0]
        migrate(url)
        return url

    def loader(self) -> Loader:
        # Read at run time like RUTTER_REJECT_TOLERANCE: a tuning knob, not part of the run config.
        return Loader(self.resolved_url, merge_workers=Settings.from_env().merge_workers)

    def registry(self) -> ConnectionRegistry:
        return ConnectionRegistry(self.resolved_url)


def resources_from_env(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or Settings.from_env()
    return {
        "rutter": RutterResource(
            base_url=settings.base_url,
            client_id=dg.EnvVar("RUTTER_CLIENT_ID"),
            client_secret=dg.EnvVar("RUTTER_CLIENT_SECRET"),
            api_version=settings.api_version,
            page_limit=settings.page_limit,
            window_fragments=settings.window_fragments,
            max_requests_per_10s=settings.max_requests_per_10s,
        ),
        "warehouse": WarehouseResource(),
    }
