"""The Celery app our workers run: ``dagster-celery worker start -A rutter_pipeline.defs.celery_app -q rutter``.

It is dagster-celery's own app and step task (``dagster_celery.app`` builds the same from a config
file), built from ``celery_executor_args`` so that workers and the executor cannot disagree on the
broker, the queue or the acknowledgement settings. It reads the same environment variables as the
executor (``RUTTER_CELERY_BROKER_URL``, ``RUTTER_CELERY_QUEUE``); the worker also needs what a run
needs (``WAREHOUSE_URL``, ``RUTTER_*``), because each step loads the code location in the worker.
"""

from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from rutter_pipeline.defs.executors import broker_url, celery_executor_args

_args = celery_executor_args()
_executor = CeleryExecutor(
    retries=RetryMode(RetryMode.DISABLED),
    broker=broker_url(),
    backend=_args["backend"],
    config_source=_args["config_source"],
)
app = make_app(_executor.app_args())
execute_plan = create_task(app)
