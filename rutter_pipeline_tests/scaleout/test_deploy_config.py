"""``deploy/``: each production ``dagster.yaml`` loads as a Dagster instance on PostgreSQL, and every
deployment carries the run limits of the repository's ``dagster.yaml`` and no secret.

The Helm values are not checked against the chart's ``values.schema.json`` here (deploy/README.md
says why); what is checked is what this project relies on in them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import TickStatus

from rutter_pipeline.defs.executors import BROKER_ENV, EXECUTOR_ENV, QUEUE_ENV
from rutter_pipeline.defs.storage import PooledPostgresEventLogStorage, PooledPostgresRunStorage
from rutter_pipeline.settings import Settings
from rutter_pipeline.stack import dagster_env, psycopg2_url

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTANCE_FILES = [DEPLOY / "dagster.yaml", DEPLOY / "celery" / "dagster.yaml"]


def repo_concurrency() -> dict[str, Any]:
    """The ``concurrency`` section of the repository's own ``dagster.yaml``: what every deployment copies."""
    return yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]


@pytest.mark.postgres
@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_deploy_dagster_yaml_loads_as_an_instance_on_postgresql(
    path: Path, dagster_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(path, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(dagster_pg_url))
    monkeypatch.setenv("RUTTER_PIPELINE_COMPUTE_LOGS", str(tmp_path / "logs"))

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert instance.get_runs() == []  # the storage answers: its tables were created in PostgreSQL
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)

        limits = repo_concurrency()
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == limits["runs"]["max_concurrent_runs"]
        assert list(queue.tag_concurrency_limits) == limits["runs"]["tag_concurrency_limits"]
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == limits["pools"]["default_limit"]

        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        sensor_ticks = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor_ticks[TickStatus.SKIPPED] == 7


def helm_values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def test_the_helm_values_queue_runs_with_the_repositorys_limits() -> None:
    values = helm_values()
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    limits = repo_concurrency()
    assert queued["maxConcurrentRuns"] == limits["runs"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == limits["runs"]["tag_concurrency_limits"]
    assert values["additionalInstanceConfig"]["concurrency"]["pools"] == limits["pools"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert values["dagsterDaemon"]["runRetries"]["enabled"]


# Keys whose value names a Kubernetes secret rather than holding one.
SECRET_REFERENCES = {"postgresqlSecretName"}
SECRET_WORDS = re.compile(r"password|secret|token|dsn", re.IGNORECASE)
SECRET_VARIABLES = {
    "RUTTER_CLIENT_ID", "RUTTER_CLIENT_SECRET", "WAREHOUSE_URL", "DAGSTER_PG_URL", "RUTTER_TOKEN_KEY",
    "RUTTER_RATE_LIMIT_URL", "SENTRY_DSN", BROKER_ENV,
}  # fmt: skip


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in _walk(value, f"{path}[{i}]")]
    return [(path, node)]


def test_the_helm_values_give_each_process_the_dagster_variables_dev_sets() -> None:
    """The daemon evaluates the marts' automation (DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS), the run pods and
    the code server write events (DAGSTER_EVENT_BATCH_SIZE): the values set what the local stack sets."""
    values = helm_values()
    expected = dagster_env(Settings.from_env({}))
    daemon = {e["name"]: e["value"] for e in values["dagsterDaemon"]["env"]}
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    code_server = {e["name"]: e["value"] for e in deployment["env"]}
    runs = dict(v.split("=", 1) for v in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"])
    settle = "DAGSTER_AUTOMATION_TICK_SETTLE_SECONDS"
    assert daemon[settle] == expected[settle] == "1"
    assert code_server == runs == expected


def test_the_helm_values_hold_no_secret_and_take_them_from_kubernetes_secrets() -> None:
    values = helm_values()
    for path, value in _walk(values):
        key = re.split(r"[.\[]", path)[-1]
        if SECRET_WORDS.search(key) and key not in SECRET_REFERENCES:
            assert not (isinstance(value, str) and value), f"{path} holds a value: secrets belong in Kubernetes"
        if isinstance(value, str):
            named = {v for v in SECRET_VARIABLES if re.search(rf"\b{v}=", value)}
            assert not named, f"{path} sets {named}: secrets belong in Kubernetes secrets"
    env_entries = [e for d in values["dagster-user-deployments"]["deployments"] for e in d.get("env", [])]
    assert not {e["name"] for e in env_entries} & SECRET_VARIABLES
    # Runs and the code server read the same secret (the run launcher does not inherit the code server's).
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    runs = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert runs["envSecrets"] == deployment["envSecrets"] == [{"name": "rutter-pipeline-env"}]
    assert values["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in values["postgresql"]


def test_the_celery_worker_environment_names_what_the_executor_reads() -> None:
    example = (DEPLOY / "celery" / "worker.env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert {EXECUTOR_ENV, BROKER_ENV, QUEUE_ENV, "DAGSTER_PG_URL", "DAGSTER_HOME", "WAREHOUSE_URL"} <= names
    unit = (DEPLOY / "celery" / "rutter-celery-worker.service").read_text()
    assert "-A rutter_pipeline.defs.celery_app" in unit and "${RUTTER_CELERY_QUEUE}" in unit
