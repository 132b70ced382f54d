"""Sensors: connection lifecycle (webhook inbox or polling), data webhooks, run-failure alerts.

The state machine lives in the domain core (``connections.lifecycle``): a sensor feeds it events
and turns every decision into Dagster requests (``lifecycle_requests``), except the data webhook
sensor's incremental syncs, which it debounces into batched runs itself. A paused connection gets
no new runs (the schedules skip it, too). Connection events are the lifecycle
sensor's, data events the data webhook sensor's: each applies its class in id order (the machine
keeps a cursor per class), so a data event on a ``pending`` connection moves it to ``ready`` too.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg

from rutter_pipeline.alerts import send_alert
from rutter_pipeline.connections import inbox, lifecycle
from rutter_pipeline.connections.lifecycle import DecisionKind
from rutter_pipeline.connections.registry import ConnectionRow, Merchant
from rutter_pipeline.connections.states import LIVE
from rutter_pipeline.defs.backfills import month_chunks
from rutter_pipeline.defs.batches import (
    batch_key,
    batch_tags,
    batches,
    daily_load_job,
    incremental_run_config,
    incremental_sync_job,
)
from rutter_pipeline.defs.jobs import ingest_job
from rutter_pipeline.defs.lifecycle_requests import act_on, utc_today
from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.defs.partitions import CONNECTIONS, CONNECTIONS_NAME
from rutter_pipeline.defs.pools import ensure_pool
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import entity_for_webhook
from rutter_pipeline.settings import Settings

EVENTS_PER_TICK = 500
# No tick asks for more runs than this: a burst of INITIAL_UPDATEs (a lender onboarding hundreds of
# merchants) is worked off over a few ticks instead of flooding the run queue in one.
MAX_RUNS_PER_TICK = 50
WILL_RETRY_TAG = "dagster/will_retry"
# Data webhooks come in bursts (one per record of a Rutter sync): wait for a quiet spell
# (RUTTER_WEBHOOK_DEBOUNCE_SECONDS), but never longer than this many of them, before syncing a connection.
DEBOUNCE_MAX_WAIT_FACTOR = 5


def run_budget(settings: Settings) -> int:
    """Runs a tick may still ask for before one more lifecycle decision could pass MAX_RUNS_PER_TICK:
    the most one decision asks for is a whole history's range runs plus an incremental catch-up."""
    most = len(month_chunks(settings.history_start, utc_today(), settings.backfill_months_per_run)) + 1
    return max(1, MAX_RUNS_PER_TICK - most)


def _result(runs, partitions, cursor: str, instance: dg.DagsterInstance, skip: str) -> dg.SensorResult:
    known = set(instance.get_dynamic_partitions(CONNECTIONS_NAME))
    new = [p for p in partitions if p not in known]
    if new:
        ensure_pool(instance)
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[CONNECTIONS.build_add_request(new)] if new else [],
        cursor=cursor,
        skip_reason=None if runs or new else skip,
    )


def build_inbox_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """The two sensors that read the webhook inbox, as often as RUTTER_SENSOR_INTERVAL_SECONDS says."""
    quiet = settings.webhook_debounce_seconds
    lifecycle_sensor = dg.sensor(
        name="connection_lifecycle_sensor",
        jobs=[ingest_job, incremental_sync_job],
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reads Rutter's lifecycle webhooks from the inbox (rutter.webhook_events) and reacts.",
    )(connection_lifecycle)
    data_sensor = dg.sensor(
        name="data_webhook_sensor",
        jobs=[incremental_sync_job, ingest_job],
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "ORDER_/PRODUCT_/CUSTOMER_/TRANSACTION_ webhooks -> an incremental sync of that connection, debounced: "
            f"after {quiet}s without new events, or {DEBOUNCE_MAX_WAIT_FACTOR * quiet}s after the first."
        ),
    )(data_webhooks)
    return [lifecycle_sensor, data_sensor]


def connection_lifecycle(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
):
    """The body of ``connection_lifecycle_sensor``."""
    url = warehouse.resolved_url
    registry = warehouse.registry()
    after = int(context.cursor or 0)
    events = inbox.read_events(url, after, limit=EVENTS_PER_TICK)
    if not events:
        return dg.SkipReason("no new webhook events")
    runs: list[dg.RunRequest] = []
    partitions: list[str] = []
    budget = run_budget(settings)
    cursor = after
    seen: set[tuple[str, int, int]] = set()
    for event in events:
        if entity_for_webhook(event.code) is None:  # data events are the data_webhook_sensor's
            # A state change is committed with its event; the budget is checked before applying
            # one, so the event that would overflow it waits for the next tick, unapplied.
            if len(runs) >= budget:
                break
            # The lifecycle keeps each decision until this cursor passes its event, and hands it out
            # again when a tick that died before Dagster stored its runs is replayed (lifecycle rule 8);
            # run keys come from the deciding event, so a replay never launches a stored run twice.
            decisions = [d for d in lifecycle.apply_event(url, event, delivered_through=after) if d.key not in seen]
            seen.update(d.key for d in decisions)
            for decision in decisions:
                new_runs, new_partitions = act_on(
                    decision, context, url, registry, settings, f"event{decision.event_id}"
                )
                runs += new_runs
                partitions += [p for p in new_partitions if p not in partitions]
                context.log.info("event %s %s -> %s %s", event.id, event.code, decision.kind, decision.connection_id)
        cursor = event.id
    return _result(runs, partitions, str(cursor), context.instance, "lifecycle events changed nothing")


@dg.sensor(
    jobs=[ingest_job, incremental_sync_job, daily_load_job],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "For deployments without webhooks: polls Rutter's /connections and /connections/status and drives the "
        "same lifecycle as the webhooks (turn it on in the UI)."
    ),
)
def connection_poll_sensor(
    context: dg.SensorEvaluationContext,
    rutter: RutterResource,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
):
    url = warehouse.resolved_url
    registry = warehouse.registry()
    client = rutter.client()
    tick = str(int(time.time()))
    found = [
        ConnectionRow(item["id"], item["access_token"], item.get("platform"))
        for item in client.list_connections()
        if item.get("id") and item.get("access_token")
    ]
    registry.add_pending(found)  # one transaction for the connections seen for the first time
    # the platform of connections registered before (from a webhook, which carries none); writes only changes
    registry.set_merchants([Merchant(r.connection_id, r.platform, None) for r in found if r.platform])
    # Rutter's status, fetched on a few threads sharing the client's rate limiter.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="status") as pool:
        bodies = pool.map(lambda row: client.connection_status(row.access_token), found)
        statuses = {row.connection_id: body for row, body in zip(found, bodies, strict=True)}
    runs: list[dg.RunRequest] = []
    partitions: list[str] = []
    budget = run_budget(settings)
    for connection_id in lifecycle.changed_by_status(url, statuses):
        if len(runs) >= budget:
            break  # the rest is applied on the next tick: their status will still say the same
        for decision in lifecycle.apply_status(url, connection_id, statuses[connection_id]):
            new_runs, new_partitions = act_on(decision, context, url, registry, settings, f"poll{tick}")
            runs += new_runs
            partitions += [p for p in new_partitions if p not in partitions]
    return _result(runs, partitions, tick, context.instance, "no connection changed state")


def data_webhooks(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
):
    """The body of ``data_webhook_sensor``."""
    url = warehouse.resolved_url
    state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {"after": 0, "pending": {}}
    pending: dict[str, dict] = state["pending"]
    now = time.time()
    events = inbox.read_events(url, state["after"], limit=EVENTS_PER_TICK * 4)
    # The lifecycle decides what a data event means (an incremental sync of a ready connection; for a
    # pending one, proof that its initial sync is done). A burst repeats one fact per record, so only
    # the newest event of each (connection, entity) is applied: the same state and decisions, a
    # transaction per pair instead of per record.
    newest: dict[tuple[str, str], inbox.WebhookEvent] = {}
    for event in events:
        entity = entity_for_webhook(event.code)
        if entity is not None and event.connection_id:
            newest[(event.connection_id, entity.name)] = event
    runs: list[dg.RunRequest] = []
    partitions: list[str] = []
    registry = warehouse.registry()
    # The debounce state is this cursor: a tick that dies after applying events loses it, so the
    # lifecycle hands the decisions of events past the stored cursor out again (lifecycle rule 8).
    ordered = sorted(newest.values(), key=lambda e: e.id)
    applied = lifecycle.apply_events(url, ordered, delivered_through=state["after"]) if newest else []
    for decision in applied:
        if decision.kind != DecisionKind.INCREMENTAL_SYNC:
            new_runs, new_partitions = act_on(decision, context, url, registry, settings, f"data{decision.event_id}")
            runs += new_runs
            partitions += [p for p in new_partitions if p not in partitions]
            continue
        slot = pending.setdefault(decision.connection_id, {"first": now, "last": now, "entities": [], "event": 0})
        slot["last"] = now
        slot["event"] = max(slot["event"], decision.event_id)
        if decision.entity not in slot["entities"]:
            slot["entities"].append(decision.entity)
    if events:
        state["after"] = events[-1].id
    live = {c.connection_id for c in registry.list(states=LIVE)}
    due: dict[str, dict] = {}
    for connection_id, slot in list(pending.items()):
        quiet = now - slot["last"] >= settings.webhook_debounce_seconds
        overdue = now - slot["first"] >= DEBOUNCE_MAX_WAIT_FACTOR * settings.webhook_debounce_seconds
        if not (quiet or overdue):
            continue
        del pending[connection_id]
        if connection_id in live:  # paused or unknown: the resume backfill covers it
            due[connection_id] = slot
    # One run per batch of due connections; each run syncs every entity any of them was told about
    # (syncing an entity with no changes costs a request or two).
    groups = batches(list(due), settings.batch_size)
    runs += [
        dg.RunRequest(
            job_name=incremental_sync_job.name,
            run_key=f"webhook:{batch_key(group)}:{max(due[c]['event'] for c in group)}",
            run_config=incremental_run_config(group, sorted({e for c in group for e in due[c]["entities"]})),
            tags=batch_tags("webhook", i, len(groups), group),
        )
        for i, group in enumerate(groups)
    ]
    return _result(
        runs, partitions, json.dumps(state), context.instance, f"{len(pending)} connection(s) waiting for the debounce"
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Run failures (including failed schema checks) to Sentry when SENTRY_DSN is set, else to the log.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, settings: dg.ResourceParam[Settings]) -> None:
    run = context.dagster_run
    # Page once per run, for its last attempt: the daemon retries a failed run (dagster.yaml run_retries)
    # and marks the attempts it will retry; a retry that succeeds needs no one.
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info("run %s failed and will be retried: no alert for this attempt", run.run_id)
        return
    tags = {
        "job": run.job_name,
        "run_id": run.run_id,
        **{
            k: v
            for k, v in run.tags.items()
            if k.startswith(("rutter/", "dagster/partition", "dagster/asset_partition"))
        },
    }
    steps = context.get_step_failure_events()
    details = [
        f"{e.step_key}: {error.message.strip()}"
        for e in steps
        if (error := getattr(e.event_specific_data, "error", None)) is not None
    ]
    # A failed schema check says why (Rutter's schema changed, or too many rejects): the page must too.
    for record in context.instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
            details.append(
                f"check {evaluation.asset_key.to_user_string()}:{evaluation.check_name} failed"
                f"{' for ' + evaluation.partition if evaluation.partition else ''}: {evaluation.description or ''}"
            )
    message = "\n".join(details) or context.failure_event.message or "run failed"
    where = send_alert(f"rutter-pipeline run failed: {run.job_name}", message, tags, dsn=settings.sentry_dsn)
    context.log.info("alert sent to %s for run %s", where, run.run_id)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        sensors=[*build_inbox_sensors(current_settings()), connection_poll_sensor, run_failure_alert_sensor],
    )
