"""The code location loads from one Settings object, finds everything in defs/ once, and shows no secret.

Built from placeholder settings (nothing is contacted: resources start only in a run), so a missing,
duplicated or renamed definition shows here before any run does.
"""

import ast
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value

import rutter_pipeline
from rutter_pipeline.definitions import build_definitions
from rutter_pipeline.settings import Settings

ENTITIES = ("customers", "orders", "products", "transactions")
ASSETS = {
    "connections",
    *(f"{stage}/{e}" for stage in ("landing", "warehouse") for e in ENTITIES),
    *(f"marts/{m}" for m in ("cohort_retention", "daily_sales", "merchant_health", "monthly_metrics")),
}
CHECKS = {
    ("connections", "merchants_fresh"),
    *((f"landing/{e}", f"{e}_schema") for e in ENTITIES),
    *((f"warehouse/{e}", f"{e}_{c}") for e in ENTITIES for c in ("keys_unique", "loaded", "rows_match_landing")),
}
JOBS = {"__ASSET_JOB", "daily_load_job", "incremental_sync_job", "ingest_job", "merchants_job"}
SCHEDULES = {
    "daily_ingest_schedule": "15 0 * * *",
    "incremental_sync_schedule": "*/15 * * * *",
    "merchants_schedule": "*/30 * * * *",
}
SENSORS = {
    "connection_lifecycle_sensor": 15,
    "connection_poll_sensor": 300,
    "data_webhook_sensor": 15,
    "marts_automation_sensor": 30,
    "platform_tag_sensor": 15,
    "run_failure_alert_sensor": 30,
}
SECRETS = {
    "client_id": "placeholder-client-id",
    "client_secret": "placeholder-client-secret",
    "token_key": "placeholder-token-key",
    "warehouse_url": "postgresql://rutter:placeholder-wh-password@db.internal/warehouse",
    "dagster_pg_url": "postgresql://dagster:placeholder-dagster-password@db.internal/dagster",
    "rate_limit_url": "redis://:placeholder-redis-password@cache.internal:6379/0",
    "sentry_dsn": "https://placeholder-sentry-key@sentry.internal/42",
    "celery_broker_url": "pyamqp://rutter:placeholder-mq-password@mq.internal:5672//",
}


def placeholder_settings(**changes) -> Settings:
    return Settings.from_env(
        {
            "RUTTER_CLIENT_ID": SECRETS["client_id"],
            "RUTTER_CLIENT_SECRET": SECRETS["client_secret"],
            "RUTTER_TOKEN_KEY": SECRETS["token_key"],
            "WAREHOUSE_URL": SECRETS["warehouse_url"],
            "DAGSTER_PG_URL": SECRETS["dagster_pg_url"],
            "RUTTER_RATE_LIMIT_URL": SECRETS["rate_limit_url"],
            "SENTRY_DSN": SECRETS["sentry_dsn"],
            "RUTTER_CELERY_BROKER_URL": SECRETS["celery_broker_url"],
            "RUTTER_HISTORY_START": "2025-01-01",
            **changes,
        }
    )


def test_every_definition_is_loaded_once() -> None:
    defs = build_definitions(placeholder_settings())
    repo = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == CHECKS
    assert {j.name for j in repo.get_all_jobs()} == JOBS
    assert {s.name: s.cron_schedule for s in repo.schedule_defs} == SCHEDULES
    assert {s.name: s.minimum_interval_seconds for s in repo.sensor_defs} == SENSORS
    assert set(defs.resources) == {"settings", "rutter", "warehouse"}
    assert all(job.executor_def is dg.in_process_executor for job in repo.get_all_jobs())


def test_the_settings_shape_the_definitions() -> None:
    defs = build_definitions(
        placeholder_settings(
            RUTTER_INCREMENTAL_CRON="*/5 * * * *",
            RUTTER_MERCHANTS_CRON="0 * * * *",
            RUTTER_SENSOR_INTERVAL_SECONDS="3",
            RUTTER_WEBHOOK_DEBOUNCE_SECONDS="7",
            RUTTER_BACKFILL_MONTHS_PER_RUN="2",
            RUTTER_HISTORY_START="2024-03-15",
        )
    )
    repo = defs.get_repository_def()
    assert defs.get_schedule_def("incremental_sync_schedule").cron_schedule == "*/5 * * * *"
    assert defs.get_schedule_def("merchants_schedule").cron_schedule == "0 * * * *"
    intervals = {s.name: s.minimum_interval_seconds for s in repo.sensor_defs}
    inbox = ("connection_lifecycle_sensor", "data_webhook_sensor", "platform_tag_sensor")
    assert [intervals[name] for name in inbox] == [3, 3, 3]
    assert "after 7s without new events, or 35s" in (defs.get_sensor_def("data_webhook_sensor").description or "")
    graph = defs.resolve_asset_graph()
    orders = graph.get(dg.AssetKey(["landing", "orders"]))
    assert orders.backfill_policy.max_partitions_per_run == 2
    months = orders.partitions_def.get_partitions_def_for_dimension("month")
    assert months.start.date().isoformat() == "2024-03-01"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RUTTER_INCREMENTAL_CRON", "every 5 minutes", "RUTTER_INCREMENTAL_CRON must be a cron string"),
        ("RUTTER_SENSOR_INTERVAL_SECONDS", "0", "RUTTER_SENSOR_INTERVAL_SECONDS must be positive"),
        ("RUTTER_WEBHOOK_DEBOUNCE_SECONDS", "-1", "RUTTER_WEBHOOK_DEBOUNCE_SECONDS must be at least 0"),
        ("RUTTER_STALE_AFTER_HOURS", "two days", "RUTTER_STALE_AFTER_HOURS must be a number of hours"),
        ("DAGSTER_EVENT_BATCH_SIZE", "many", "DAGSTER_EVENT_BATCH_SIZE must be an integer"),
        ("DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS", "0", "DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS must be more than 0"),
        ("DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS", "soon", "DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS must be a number"),
        ("RUTTER_EXECUTOR", "k8s", "RUTTER_EXECUTOR must be 'in_process' or 'celery'"),
    ],
)
def test_orchestration_settings_are_checked_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({name: value})


def test_no_secret_reaches_what_dagster_shows() -> None:
    """The repository snapshot is what the webserver and the run config see: the Settings resource
    is a plain object (no config), the credentials are EnvVars, the URLs are resolved in the run."""
    settings = placeholder_settings()
    snapshot = serialize_value(RepositorySnap.from_def(build_definitions(settings).get_repository_def()))
    assert [name for name, secret in SECRETS.items() if secret in snapshot] == []
    assert [name for name, secret in SECRETS.items() if secret in repr(settings)] == ["client_id"]
    assert "RUTTER_CLIENT_SECRET" in snapshot  # the EnvVar's name, not its value


def test_defs_modules_do_not_read_the_environment() -> None:
    """The environment is read once, by definitions.py; defs/ gets the Settings passed down."""
    readers = []
    for path in sorted((Path(rutter_pipeline.__file__).parent / "defs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in {"environ", "getenv", "from_env"}:
                readers.append(f"{path.name}:{node.lineno}")
    # only the Celery worker's entry point: a process of its own, which loads no code location
    assert [r.split(":")[0] for r in readers] == ["celery_app.py"], readers


@pytest.mark.slow
def test_an_installed_copy_loads_the_same_definitions(tmp_path: Path) -> None:
    """The deployment pip-installs the package (no pyproject.toml beside it): the folder is found from
    the package, and loading it imports no Celery (an optional extra)."""
    root = Path(rutter_pipeline.__file__).resolve().parent.parent
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(target), str(root)], check=True, capture_output=True, timeout=300)
    script = (
        "import sys, rutter_pipeline\n"
        "from rutter_pipeline.definitions import defs\n"
        "loaded = defs()\n"
        "print(rutter_pipeline.__file__)\n"
        "print(sorted(k.to_user_string() for k in loaded.resolve_asset_graph().get_all_asset_keys()))\n"
        "print('celery' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    where, assets, celery = out.stdout.strip().splitlines()[-3:]
    assert where.startswith(str(target))
    assert assets == repr(sorted(ASSETS))
    assert celery == "False"
