"""Resources: the Settings, the Rutter client and the warehouse (docs/architecture.md §4.1).

Secrets stay out of run config: the org credentials are ``EnvVar``s (Dagster shows the variable's
name, never its value), the warehouse URL is resolved from the Settings inside the run (the Settings
resource is a plain object, which Dagster shows no config of), and access tokens are read from the
connection registry inside the run.
"""

from functools import cached_property

import dagster as dg
from pydantic import PrivateAttr

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.defs.retries import wait_before_retry
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.embedded import warehouse_url
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate

# The resource key of the process's Settings: asset, op, sensor and schedule bodies take
# ``settings: dg.ResourceParam[Settings]``. A plain Python object, so Dagster shows no config for it
# (its secrets never reach run config or the UI).
SETTINGS_KEY = "settings"


class RutterResource(dg.ConfigurableResource):
    """Rutter API access for one run; the client (and its rate limiter) is built once per process.

    What operators tune comes from the Settings; the credentials are ``EnvVar``s so that the UI shows
    the variables' names, never their values.
    """

    settings: dg.ResourceDependency[Settings]
    client_id: str
    client_secret: str
    # Transport limits, tunable per run in the launchpad (``resources.rutter.config``) without a deploy:
    # a slow upstream may need a longer read timeout, a fault test a shorter one and fewer attempts.
    read_timeout_s: float = 60.0
    max_attempts: int = 8
    backoff_initial_s: float = 0.5
    _client: RutterClient | None = PrivateAttr(default=None)

    def client(self) -> RutterClient:
        if self._client is None:
            # Where the org's rate limit is shared (the warehouse by default) and its shares come from
            # the settings, not run config, because the store's URL may carry a password. Built without
            # them, every run limited itself in memory, four runs sending four times the org's limit
            # (found by reliability/test_load.py).
            self._client = RutterClient.from_settings(
                self.settings,
                client_id=self.client_id,
                client_secret=self.client_secret,
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

    settings: dg.ResourceDependency[Settings]
    url: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step of a run uses the warehouse: a retried run waits out its backoff here (defs/retries.py).
        wait_before_retry(context, self.settings.run_retry_delay_seconds)

    @cached_property
    def resolved_url(self) -> str:
        url = self.url or warehouse_url(self.settings)
        migrate(url)
        return url

    def loader(self) -> Loader:
        return Loader(self.resolved_url, merge_workers=self.settings.merge_workers)

    def registry(self) -> ConnectionRegistry:
        return ConnectionRegistry(self.resolved_url)


def resources_from_settings(settings: Settings) -> dict[str, object]:
    """The code location's resources, from the process's one Settings object."""
    return {
        SETTINGS_KEY: settings,
        "rutter": RutterResource(
            settings=settings, client_id=dg.EnvVar("RUTTER_CLIENT_ID"), client_secret=dg.EnvVar("RUTTER_CLIENT_SECRET")
        ),
        "warehouse": WarehouseResource(settings=settings),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_settings(current_settings()))
