"""The Celery app our workers run: ``dagster-celery worker start -A rutter_pipeline.defs.celery_app -q rutter``.

It is dagster-celery's own app and step task (``dagster_celery.app`` builds the same from a config
file), built from ``celery_executor_args`` so that workers and the executor cannot disagree on the
broker, the queue or the acknowledgement settings. It reads the same environment variables as the
executor (``RUTTER_CELERY_BROKER_URL``, ``RUTTER_CELERY_QUEUE``); the worker also needs what a run
needs (``WAREHOUSE_URL``, ``RUTTER_*``), because each step loads the code location in the worker.
"""

from functools import cache
from typing import TYPE_CHECKING

from rutter_pipeline.defs.executors import broker_url, celery_executor_args
from rutter_pipeline.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


def worker_app(settings: Settings) -> "Celery":
    """dagster-celery's app with its step task (``execute_plan``), configured as the executor is."""
    # Imported here: the code location imports every module of defs/, and the celery extra is optional.
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    args = celery_executor_args(settings)
    executor = CeleryExecutor(
        retries=RetryMode(RetryMode.DISABLED),
        broker=broker_url(settings),
        backend=args["backend"],
        config_source=args["config_source"],
    )
    celery_app = make_app(executor.app_args())
    # Not shared: Celery would add a shared task to every app this process builds (tests build several).
    create_task(celery_app, shared=False)
    return celery_app


@cache
def _app_from_env() -> "Celery":
    return worker_app(Settings.from_env())  # the worker's one read of its environment


def __getattr__(name: str) -> "Celery":
    """``app``, built when the worker (``-A rutter_pipeline.defs.celery_app``) first asks for it;
    loading the code location never builds it."""
    if name == "app":
        return _app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
