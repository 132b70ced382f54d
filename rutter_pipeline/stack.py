"""Where the local stack's parts live: state folder, PostgreSQL URLs, DAGSTER_HOME.

Shared by ``dev``, ``demo``, ``connections`` and ``env`` so that every process (CLI, daemon, webserver,
run workers, ``dagster asset materialize``) sees the same instance and warehouse.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.embedded import default_urls
from rutter_pipeline.warehouse.tokens import KEY_FILE_ENV, ensure_key_file

PACKAGE_ROOT = Path(__file__).resolve().parent
# Events Dagster may write to its PostgreSQL storage in one statement (DAGSTER_EVENT_BATCH_SIZE; 0, its
# default, writes each alone). A range run records one materialization and one check result per
# partition: unbatched, that is a new connection and an insert each, 7-9 s per asset for a year of
# one connection (370 partitions); batched, 0.4-0.6 s (benchmarks/RESULTS.md).
EVENT_BATCH_SIZE = Settings.event_batch_size


def dagster_env(settings: Settings | None = None) -> dict[str, str]:
    """Dagster's own variables every process of the stack gets (daemon, webserver, run workers): the
    user's own values, else the defaults of Settings (EVENT_BATCH_SIZE, a settle of 1 s).

    DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS: unset (Dagster's default), the automation reads each asset's
    new events at its own moment of a tick, so one tick can see a batch's warehouse events and not the
    marts events written right after them, and ask for marts runs the batch made needless (at 1,000
    connections: 159 runs in a daily load and a sync, benchmarks/RESULTS.md). Set, a tick reads every
    asset up to the newest event id it saw, after waiting this long for transactions still in flight.
    """
    settings = settings or Settings.from_env()
    return {
        "DAGSTER_EVENT_BATCH_SIZE": str(settings.event_batch_size),
        "DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS": f"{settings.automation_settle_seconds:g}",
    }


def psycopg2_url(url: str) -> str:
    """Dagster's storage must use psycopg2 (docs/architecture.md §6): rewrite a plain postgresql:// URL."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def dagster_yaml_source() -> Path:
    """The project's dagster.yaml: next to the package in a checkout, else the working directory."""
    for candidate in (PACKAGE_ROOT.parent / "dagster.yaml", Path.cwd() / "dagster.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("dagster.yaml not found next to the rutter_pipeline package or in the working directory")


@dataclass(frozen=True)
class StackEnv:
    warehouse_url: str
    dagster_pg_url: str
    dagster_home: Path
    compute_logs: Path
    # The embedded warehouse's token key (warehouse/tokens.py), when no RUTTER_TOKEN_KEY is set.
    token_key_file: Path | None = None

    def as_env(self) -> dict[str, str]:
        env = {
            "WAREHOUSE_URL": self.warehouse_url,
            "DAGSTER_PG_URL": self.dagster_pg_url,
            "DAGSTER_HOME": str(self.dagster_home),
            "RUTTER_PIPELINE_COMPUTE_LOGS": str(self.compute_logs),
            **dagster_env(),
        }
        if self.token_key_file is not None:
            env[KEY_FILE_ENV] = str(self.token_key_file)
        return env


def prepare_stack_env(apply: bool = True) -> StackEnv:
    """Start the embedded PostgreSQL if a URL is missing, prepare DAGSTER_HOME, export the variables."""
    settings = Settings.from_env()
    embedded = not settings.warehouse_url
    warehouse_url, dagster_url = default_urls(settings)
    base = settings.state_dir
    home = Path(os.environ.get("DAGSTER_HOME") or base / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = dagster_yaml_source()
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    logs = Path(os.environ.get("RUTTER_PIPELINE_COMPUTE_LOGS") or base / "compute_logs")
    logs.mkdir(parents=True, exist_ok=True)
    # Only the embedded warehouse gets a generated token key: a warehouse of your own needs RUTTER_TOKEN_KEY.
    key_file = ensure_key_file() if embedded and not settings.token_key else None
    env = StackEnv(warehouse_url, psycopg2_url(dagster_url), home, logs, key_file)
    if apply:
        os.environ.update(env.as_env())
    return env
