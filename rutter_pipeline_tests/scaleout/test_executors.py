"""The executor choice: in the run's process unless RUTTER_EXECUTOR=celery, whose config names its secrets."""

import dagster as dg
import pytest

from rutter_pipeline.defs.executors import (
    BROKER_ENV,
    DEFAULT_BROKER,
    DEFAULT_QUEUE,
    EXECUTOR_ENV,
    QUEUE_ENV,
    celery_executor_args,
    executor_from_settings,
)
from rutter_pipeline.settings import Settings


def test_steps_run_in_the_runs_process_by_default() -> None:
    assert executor_from_settings(Settings.from_env({})) is dg.in_process_executor
    assert executor_from_settings(Settings.from_env({EXECUTOR_ENV: "in_process"})) is dg.in_process_executor


def test_celery_is_dagster_celerys_executor_configured_for_late_acknowledgement() -> None:
    executor = executor_from_settings(Settings.from_env({EXECUTOR_ENV: "celery", QUEUE_ENV: "rutter-eu"}))
    assert executor.name == "rutter_celery"
    args = celery_executor_args(Settings.from_env({QUEUE_ENV: "rutter-eu"}))
    assert args["config_source"]["task_default_queue"] == "rutter-eu"
    assert args["config_source"]["task_acks_late"] is True
    assert args["config_source"]["task_reject_on_worker_lost"] is True


def test_a_broker_url_with_a_password_stays_out_of_the_executor_config() -> None:
    """The config names the variable; Dagster resolves it when the run starts, so no run shows the password."""
    settings = Settings.from_env({BROKER_ENV: "pyamqp://rutter:s3cret@mq.internal:5672//"})
    args = celery_executor_args(settings)
    assert args["broker"] == {"env": BROKER_ENV}
    assert "s3cret" not in repr(args)
    assert "s3cret" not in repr(settings)
    defaults = celery_executor_args(Settings.from_env({}))
    assert defaults["broker"] == DEFAULT_BROKER
    assert defaults["config_source"]["task_default_queue"] == DEFAULT_QUEUE


def test_an_unknown_executor_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="RUTTER_EXECUTOR must be 'in_process' or 'celery', got 'k8s'"):
        Settings.from_env({EXECUTOR_ENV: "k8s"})


def test_the_worker_app_is_built_from_the_executors_settings() -> None:
    """A worker started with ``-A rutter_pipeline.defs.celery_app`` consumes what the executor sends."""
    from rutter_pipeline.defs.celery_app import worker_app

    app = worker_app(
        Settings.from_env({QUEUE_ENV: "rutter-eu", BROKER_ENV: "pyamqp://rutter:s3cret@mq.internal:5672//"})
    )
    assert app.conf.task_default_queue == "rutter-eu"
    assert app.conf.task_acks_late is True and app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_url == "pyamqp://rutter:s3cret@mq.internal:5672//"
    assert "execute_plan" in app.tasks  # dagster-celery's step task, the one the executor sends


def test_loading_the_code_location_builds_no_worker_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code location imports every module of defs/: the worker module must not need celery then."""
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "rutter_pipeline.defs.celery_app", raising=False)
    module = importlib.import_module("rutter_pipeline.defs.celery_app")
    assert "app" not in vars(module)
    assert module.app is module.app  # built on the worker's first access, once
