"""Where a run's steps execute: in the run's own process (the default), or on Celery workers.

``RUTTER_EXECUTOR=celery`` (opt-in, the ``celery`` extra) hands every step of every job to
dagster-celery workers fed by RabbitMQ, so that workers on several machines share the work without
Kubernetes. The run itself (the orchestrator that submits steps and waits for them) still starts
where the run launcher starts it: the run queue, its tag limits (one run per ``rutter/connection``)
and ``max_concurrent_runs`` keep working at run level. We do not use dagster-celery's
``CeleryRunLauncher``: it is undocumented (dagster #32915) and its run monitoring is a Celery task
state rather than Dagster's run worker health check.

Both sides of the queue must agree on the Celery settings: the executor (which publishes a step as
a task) and the worker (which consumes it). ``celery_executor_args`` is the one definition; the
executor is configured from it, and the worker app (``rutter_pipeline.defs.celery_app``) is built
from it, so a worker started with ``-A rutter_pipeline.defs.celery_app`` needs no config file.
"""

from typing import Any

import dagster as dg

from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.settings import EXECUTORS, Settings

EXECUTOR_ENV = "RUTTER_EXECUTOR"
BROKER_ENV = "RUTTER_CELERY_BROKER_URL"
QUEUE_ENV = "RUTTER_CELERY_QUEUE"
IN_PROCESS, CELERY = EXECUTORS
# RabbitMQ's guest account only accepts connections from localhost: right for one machine, and
# the value a multi-machine setup must override (with a user of its own, in RUTTER_CELERY_BROKER_URL).
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_QUEUE = "rutter"


def celery_settings(queue: str) -> dict[str, Any]:
    """Celery settings the executor and every worker share (the executor's ``config_source``)."""
    return {
        # Steps go to this queue and workers listen on it (-q): deployments (or test runs) that share
        # a broker keep their steps apart by queue name.
        "task_default_queue": queue,
        # A step is acknowledged when it has finished, not when a worker takes it: a worker that dies
        # mid-step (SIGKILL, a lost machine) leaves its message unacknowledged, and RabbitMQ hands it
        # to another worker when the dead one's connection closes. Steps may run again: landing
        # replaces its scope and the merge is idempotent, so a second run of a step changes nothing.
        "task_acks_late": True,
        # The same when only a pool process dies (the OOM killer) while the worker lives on: the task
        # is put back instead of failing with WorkerLostError, which would fail the run.
        "task_reject_on_worker_lost": True,
        # One step per worker process at a time: a prefetched step would wait behind a long one and be
        # redelivered only when that worker dies.
        "worker_prefetch_multiplier": 1,
    }


def broker_url(settings: Settings) -> str:
    """The broker URL itself, for the worker app (a worker process holds it anyway, as Celery's own config)."""
    return settings.celery_broker_url or DEFAULT_BROKER


def celery_executor_args(settings: Settings) -> dict[str, Any]:
    """The celery executor's config: broker from ``RUTTER_CELERY_BROKER_URL``, queue from ``RUTTER_CELERY_QUEUE``.

    The broker URL may carry a password, so the executor config names the variable (Dagster resolves
    it when the run starts) rather than its value; only the built-in guest default is a literal.
    """
    return {
        "broker": {"env": BROKER_ENV} if settings.celery_broker_url else DEFAULT_BROKER,
        # Results travel back to the run that submitted the step over the broker: no second service.
        "backend": "rpc://",
        "config_source": celery_settings(settings.celery_queue),
    }


def executor_from_settings(settings: Settings) -> dg.ExecutorDefinition:
    """The executor every job uses: ``RUTTER_EXECUTOR`` = ``in_process`` (default) or ``celery``.

    In process is the default because a partition's steps are seconds of work: a process (or a
    Celery round trip) per step would cost as much again on one machine.
    """
    choice = settings.executor
    if choice == IN_PROCESS:
        return dg.in_process_executor
    if choice == CELERY:
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:  # the optional extra is missing: say which one
            raise ImportError(
                f"{EXECUTOR_ENV}=celery needs the celery extra: pip install 'rutter-pipeline[celery]'"
            ) from exc
        return celery_executor.configured(celery_executor_args(settings), name="rutter_celery")
    raise ValueError(f"{EXECUTOR_ENV} must be {IN_PROCESS!r} or {CELERY!r}, got {choice!r}")


@dg.definitions
def defs() -> dg.Definitions:
    """The default executor of every job of the code location (no job sets its own)."""
    return dg.Definitions(executor=executor_from_settings(current_settings()))
