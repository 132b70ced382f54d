"""Backoff between a failed run and its automatic retry.

``dagster.yaml`` turns on Dagster's run retries: the daemon re-submits a failed run (``FROM_FAILURE``,
with the run's tags, so a range run keeps its range and its connection slot) up to ``max_retries``
times. Dagster 1.13 re-submits at once, which against an upstream outage only burns the retries in
a minute. So a retried run waits, before its first step works, until ``RUTTER_RUN_RETRY_DELAY_SECONDS``
x 2^(n-1) (capped at 15 minutes) after it was created, n being its ``dagster/retry_number``: 60, 120
and 240 s by default, which with the client's own retries (about a minute per request) rides out an
outage of about eight minutes. The deadline is measured from the run's creation, so every step of
the run (one process, or one per step with Celery) waits for the same moment, not once each.
"""

import time

import dagster as dg

RETRY_NUMBER_TAG = "dagster/retry_number"
MAX_DELAY_SECONDS = 15 * 60


def backoff_seconds(retry_number: int, base_seconds: int) -> float:
    """Seconds between the failure and retry ``retry_number`` (1 for the first retry); 0 for a first run."""
    if retry_number <= 0:
        return 0.0
    return float(min(MAX_DELAY_SECONDS, base_seconds * 2 ** (retry_number - 1)))


def wait_before_retry(context: dg.InitResourceContext, base_seconds: int) -> float:
    """Sleep until this run's retry deadline, if it is a retry; return the seconds waited."""
    run = context.dagster_run
    if run is None or context.instance is None:
        return 0.0  # a sensor or a schedule initialising the resource
    retry_number = int(run.tags.get(RETRY_NUMBER_TAG) or 0)
    delay = backoff_seconds(retry_number, base_seconds)
    if not delay:
        return 0.0
    record = context.instance.get_run_record_by_id(run.run_id)
    created = record.create_timestamp.timestamp() if record else time.time()
    wait = created + delay - time.time()
    if wait <= 0:
        return 0.0
    if context.log is not None:
        context.log.info(f"retry {retry_number} of a failed run: waiting {wait:.0f} s before starting (backoff)")
    time.sleep(wait)
    return wait
