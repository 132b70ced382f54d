"""Configuration read from the environment (docs/architecture.md §4.1, a public contract).

One frozen object so that every component sees the same values and tests can build their own
without touching ``os.environ``. Secrets are kept out of ``repr`` so that a settings object can be
logged safely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

DEFAULT_BASE_URL = "https://production.rutterapi.com/versioned"
DEFAULT_API_VERSION = "2023-03-14"
DEFAULT_INCREMENTAL_CRON = "*/15 * * * *"
DEFAULT_MERCHANTS_CRON = "*/30 * * * *"
# Where a run's steps execute (defs/executors.py): in the run's process, or on Celery workers.
EXECUTORS = ("in_process", "celery")
DEFAULT_CELERY_QUEUE = "rutter"


def default_history_start(today: date | None = None) -> date:
    """Two years before today, on the 1st of that month (docs/architecture.md §4.1)."""
    today = today or date.today()
    return date(today.year - 2, today.month, 1)


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The project's state folder: embedded PostgreSQL, Dagster home, compute logs.

    ``RUTTER_PIPELINE_STATE_DIR`` overrides it; the default is ``.state`` in the working directory
    so that a clone keeps its state to itself. Read on each call (not once per process): the CLIs set
    the variable for themselves and their children before the embedded server starts.
    """
    env = os.environ if env is None else env
    return Path(env.get("RUTTER_PIPELINE_STATE_DIR") or ".state").resolve()


def _int_env(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be {'positive' if minimum == 1 else f'at least {minimum}'}, got {value}")
    return value


def _settle_env(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number_env(env, name, default, "a number of seconds")
    if not 0 < value <= 60:
        raise ValueError(f"{name} must be more than 0 and at most 60 seconds, got {value:g}")
    return value


def _number_env(env: Mapping[str, str], name: str, default: float, expected: str) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {expected}, got {raw!r}") from exc


def _fraction_env(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number_env(env, name, default, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def _share_env(env: Mapping[str, str], name: str, default: float) -> float:
    """A fraction of the rate limit: above 0 (a share of nothing would block forever), at most 1."""
    value = _fraction_env(env, name, default)
    if value == 0.0:
        raise ValueError(f"{name} must be above 0, got 0")
    return value


def _hours_env(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number_env(env, name, default, "a number of hours")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _cron_env(env: Mapping[str, str], name: str, default: str) -> str:
    """A five-field cron string; Dagster checks the fields themselves when it builds the schedule."""
    raw = (env.get(name) or default).strip()
    if len(raw.split()) != 5:
        raise ValueError(f"{name} must be a cron string of five fields such as {default!r}, got {raw!r}")
    return raw


def _choice_env(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or choices[0]).strip()
    if raw not in choices:
        raise ValueError(f"{name} must be {' or '.join(map(repr, choices))}, got {raw!r}")
    return raw


def _currency_env(env: Mapping[str, str], name: str, default: str) -> str:
    """An ISO 4217 code: three letters, upper-cased (marts.fx_rates accepts only that form)."""
    raw = (env.get(name) or default).strip().upper()
    if len(raw) != 3 or not raw.isascii() or not raw.isalpha():
        raise ValueError(f"{name} must be a three-letter ISO 4217 code such as USD, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Values of the environment variables of docs/architecture.md §4.1."""

    base_url: str = DEFAULT_BASE_URL
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    api_version: str = DEFAULT_API_VERSION
    # URLs that may carry a password: resolved where they are used (warehouse/embedded.py), never shown.
    warehouse_url: str | None = field(default=None, repr=False)
    dagster_pg_url: str | None = field(default=None, repr=False)
    history_start: date = field(default_factory=default_history_start)
    window_fragments: int = 3
    page_limit: int = 500
    max_requests_per_10s: int = 450
    # Where the org's request log is shared (RUTTER_RATE_LIMIT_URL): a postgresql:// or redis:// URL,
    # or "memory" for this process only. None shares it in the warehouse PostgreSQL.
    rate_limit_url: str | None = field(default=None, repr=False)
    # Part of the org limit that range loads (backfills, daily loads) may use, so incremental syncs
    # always keep the rest; and part one connection may use, so one merchant cannot take all of it.
    rate_limit_bulk_share: float = 0.7
    rate_limit_connection_share: float = 0.5
    incremental_lag_minutes: int = 15
    # Share of a UTC day's records that may be rejected before the day is held (docs/architecture.md §5.2).
    reject_tolerance: float = 0.0
    # Connections a range merge uses at once (Loader.merge): 1 makes every range merge one transaction.
    merge_workers: int = 2
    # Connections one batched run handles (daily loads, incremental syncs), and how many of them it
    # works on at once (threads sharing the process's client and rate limiter).
    batch_size: int = 50
    batch_workers: int = 8
    # Months of one connection per backfill range run (a UI backfill or a sensor's history backfill).
    backfill_months_per_run: int = 6
    sentry_dsn: str | None = field(default=None, repr=False)
    # Fernet key(s) for access tokens at rest, comma-separated, the first encrypting (warehouse/tokens.py).
    token_key: str | None = field(default=None, repr=False)
    # A file holding the key(s) instead (RUTTER_TOKEN_KEY_FILE): the embedded stack's .state/token.key.
    token_key_file: str | None = None
    # Backoff before the daemon's automatic retry n of a failed run: this x 2^(n-1) s (defs/retries.py).
    run_retry_delay_seconds: int = 60
    # ISO 4217 code the underwriting marts convert into, with the rates users put in marts.fx_rates.
    reporting_currency: str = "USD"
    # Orchestration: schedules, sensors and how often they look (the demo and tests shorten them).
    incremental_cron: str = DEFAULT_INCREMENTAL_CRON
    merchants_cron: str = DEFAULT_MERCHANTS_CRON
    # Data webhooks come in bursts: a sync waits for this quiet spell, never longer than 5x it.
    webhook_debounce_seconds: int = 60
    sensor_interval_seconds: int = 15
    # A live merchant whose newest order is older than this is stale (merchants_fresh).
    stale_after_hours: float = 48.0
    # Events Dagster writes to its storage in one statement (Dagster's own variable; the stack sets it).
    event_batch_size: int = 1000
    # Seconds the daemon's automation waits before reading a tick's events (Dagster's own variable; the
    # stack sets it): with it set, a tick reads every asset up to one event id (defs/marts.py).
    automation_settle_seconds: float = 1.0
    executor: str = EXECUTORS[0]
    # The broker URL may carry a password: the executor config names the variable, never this value.
    celery_broker_url: str | None = field(default=None, repr=False)
    celery_queue: str = DEFAULT_CELERY_QUEUE
    state_dir: Path = field(default_factory=lambda: state_dir({}))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        start_raw = env.get("RUTTER_HISTORY_START")
        try:
            history_start = date.fromisoformat(start_raw) if start_raw else default_history_start()
        except ValueError as exc:
            raise ValueError(f"RUTTER_HISTORY_START must be YYYY-MM-DD, got {start_raw!r}") from exc
        page_limit = _int_env(env, "RUTTER_PAGE_LIMIT", 500)
        if page_limit > 500:
            raise ValueError(f"RUTTER_PAGE_LIMIT is at most 500 (Rutter's maximum), got {page_limit}")
        return cls(
            base_url=env.get("RUTTER_BASE_URL") or DEFAULT_BASE_URL,
            client_id=env.get("RUTTER_CLIENT_ID") or None,
            client_secret=env.get("RUTTER_CLIENT_SECRET") or None,
            api_version=env.get("RUTTER_API_VERSION") or DEFAULT_API_VERSION,
            warehouse_url=env.get("WAREHOUSE_URL") or None,
            dagster_pg_url=env.get("DAGSTER_PG_URL") or None,
            history_start=history_start,
            window_fragments=_int_env(env, "RUTTER_WINDOW_FRAGMENTS", 3),
            page_limit=page_limit,
            max_requests_per_10s=_int_env(env, "RUTTER_MAX_REQUESTS_PER_10S", 450),
            rate_limit_url=env.get("RUTTER_RATE_LIMIT_URL") or None,
            rate_limit_bulk_share=_share_env(env, "RUTTER_RATE_LIMIT_BULK_SHARE", 0.7),
            rate_limit_connection_share=_share_env(env, "RUTTER_RATE_LIMIT_CONNECTION_SHARE", 0.5),
            incremental_lag_minutes=_int_env(env, "RUTTER_INCREMENTAL_LAG_MINUTES", 15),
            reject_tolerance=_fraction_env(env, "RUTTER_REJECT_TOLERANCE", 0.0),
            merge_workers=_int_env(env, "RUTTER_MERGE_WORKERS", 2),
            batch_size=_int_env(env, "RUTTER_BATCH_SIZE", 50),
            batch_workers=_int_env(env, "RUTTER_BATCH_WORKERS", 8),
            backfill_months_per_run=_int_env(env, "RUTTER_BACKFILL_MONTHS_PER_RUN", 6),
            sentry_dsn=env.get("SENTRY_DSN") or None,
            token_key=env.get("RUTTER_TOKEN_KEY") or None,
            token_key_file=env.get("RUTTER_TOKEN_KEY_FILE") or None,
            run_retry_delay_seconds=_int_env(env, "RUTTER_RUN_RETRY_DELAY_SECONDS", 60),
            reporting_currency=_currency_env(env, "RUTTER_REPORTING_CURRENCY", "USD"),
            incremental_cron=_cron_env(env, "RUTTER_INCREMENTAL_CRON", DEFAULT_INCREMENTAL_CRON),
            merchants_cron=_cron_env(env, "RUTTER_MERCHANTS_CRON", DEFAULT_MERCHANTS_CRON),
            webhook_debounce_seconds=_int_env(env, "RUTTER_WEBHOOK_DEBOUNCE_SECONDS", 60, minimum=0),
            sensor_interval_seconds=_int_env(env, "RUTTER_SENSOR_INTERVAL_SECONDS", 15),
            stale_after_hours=_hours_env(env, "RUTTER_STALE_AFTER_HOURS", 48.0),
            event_batch_size=_int_env(env, "DAGSTER_EVENT_BATCH_SIZE", 1000, minimum=0),
            automation_settle_seconds=_settle_env(env, "DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS", 1.0),
            executor=_choice_env(env, "RUTTER_EXECUTOR", EXECUTORS),
            celery_broker_url=env.get("RUTTER_CELERY_BROKER_URL") or None,
            celery_queue=env.get("RUTTER_CELERY_QUEUE") or DEFAULT_CELERY_QUEUE,
            state_dir=state_dir(env),
        )

    @property
    def has_credentials(self) -> bool:
        return bool(self.client_id and self.client_secret)
