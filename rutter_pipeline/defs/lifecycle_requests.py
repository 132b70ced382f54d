"""Lifecycle decisions -> Dagster requests: the one translation the lifecycle sensors share.

``connections.lifecycle`` decides; this module says what each decision means for Dagster: add the
connection's partition, launch history backfills as range runs, resume with exactly the gap plus
an incremental catch-up, or, on a pause, cancel the connection's queued runs (they would fail on
NEEDS_UPDATE and page someone).
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from rutter_pipeline.connections import lifecycle
from rutter_pipeline.connections.lifecycle import DecisionKind
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.connections.states import PAUSED
from rutter_pipeline.defs.backfills import range_run_requests
from rutter_pipeline.defs.batches import incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.partitions import month_end
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import load_log


def utc_today() -> date:
    return datetime.now(UTC).date()


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier (the month's last day when it is shorter)."""
    total = day.year * 12 + day.month - 1 - months
    first = date(total // 12, total % 12 + 1, 1)
    return min(first + timedelta(days=day.day - 1), month_end(first))


def gap_start_day(url: str, registry: ConnectionRegistry, connection_id: str) -> date | None:
    """First day that may miss records after a pause: the day the connection was paused (that day's
    rows stop at the pause), or the day after its last loaded day (rutter.load_log) when earlier."""
    days = []
    last = load_log.last_loaded_day(url, connection_id, ORDERS.name)
    if last:
        days.append(last + timedelta(days=1))
    pauses = [row["at"] for row in registry.history(connection_id) if row["to_state"] in PAUSED]
    if pauses:
        days.append(pauses[-1].astimezone(UTC).date())
    return min(days) if days else None


def older_range(
    detail: dict, history_start: date, today: date, first_with_records: date | None = None
) -> tuple[date, date]:
    """The days a HISTORICAL_UPDATE made readable: from its ``xMonthsAgo`` up to where what we hold
    already reaches. That is the earlier of two safe bounds: the previous announcement's reach (for
    the first one, the day the initial sync finished), and the oldest loaded day with records (older
    days were empty when loaded: not served yet, or truly empty). Rutter's batch boundaries fall
    inside a day, so both boundary days are read again, and the start is counted from the day of
    the announcement, a day earlier still (it may have been received before midnight)."""
    months = lifecycle.announced_months(detail)
    announced = min(today, date.fromisoformat(detail["announced_on"])) if detail.get("announced_on") else today
    start = max(history_start, months_before(announced, months) - timedelta(days=1)) if months else history_start
    previous = int(detail.get("previous_months") or 0)
    if previous:
        end = months_before(today, previous)
    elif detail.get("ready_on"):
        end = date.fromisoformat(detail["ready_on"])
    else:
        end = today
    if first_with_records:
        end = min(end, first_with_records)
    return start, max(start, min(end, today))


def decision_requests(
    decision: lifecycle.Decision, url: str, registry: ConnectionRegistry, settings: Settings, key: str
) -> tuple[list[dg.RunRequest], list[str]]:
    """Run requests and new partition keys for one lifecycle decision.

    ``incremental_sync`` is not one of them: the data webhook sensor, the only one that receives it,
    debounces it into batched runs. A ``pause`` asks for nothing: :func:`act_on` cancels what was
    already asked for.
    """
    conn = decision.connection_id
    end = utc_today()
    start, months = settings.history_start, settings.backfill_months_per_run
    match decision.kind:
        case DecisionKind.ADD_PARTITION:
            return [], [conn]
        case DecisionKind.BACKFILL_HISTORY:
            return range_run_requests(conn, start, end, reason="history", key=key, months_per_run=months), []
        case DecisionKind.BACKFILL_OLDER:
            first = load_log.first_day_with_records(url, conn, ORDERS.name)
            older, newest = older_range(decision.detail, start, end, first)
            return range_run_requests(conn, older, newest, reason="historical", key=key, months_per_run=months), []
        case DecisionKind.RESUME_BACKFILL_GAP:
            # Records created while paused are in the gap; records of older days updated meanwhile come
            # with an incremental sync from the watermark.
            gap_start = max(start, gap_start_day(url, registry, conn) or start)
            catch_up = dg.RunRequest(
                job_name=incremental_sync_job.name,
                run_key=f"resume:{conn}:{key}",
                run_config=incremental_run_config([conn]),
                tags={"rutter/connection": conn, "rutter/trigger": "resume"},
            )
            gap = range_run_requests(conn, gap_start, end, reason="gap", key=key, months_per_run=months)
            return [*gap, catch_up], []
        case DecisionKind.PAUSE:
            return [], []
    raise ValueError(f"lifecycle decision {decision.kind!r} is not turned into runs one by one")


def cancel_queued_runs(instance: dg.DagsterInstance, connection_id: str, why: str) -> list[str]:
    """Cancel the connection's runs still in the queue (a pause): started ones finish or fail on their own.

    Only runs tagged with the connection (the sensors' range runs and catch-ups); a batch run covers
    many connections and skips a paused one itself.
    """
    queued = instance.get_runs(
        filters=dg.RunsFilter(tags={"rutter/connection": connection_id}, statuses=[dg.DagsterRunStatus.QUEUED])
    )
    canceled = [run.run_id for run in queued if instance.run_coordinator.cancel_run(run.run_id)]
    if canceled:
        instance.report_engine_event(
            f"connection {connection_id} paused ({why}): canceled {len(canceled)} queued run(s)", queued[0]
        )
    return canceled


def act_on(
    decision: lifecycle.Decision,
    context: dg.SensorEvaluationContext,
    url: str,
    registry: ConnectionRegistry,
    settings: Settings,
    key: str,
) -> tuple[list[dg.RunRequest], list[str]]:
    """:func:`decision_requests`, and for a pause the cancellation of the connection's queued runs."""
    if decision.kind == DecisionKind.PAUSE:
        canceled = cancel_queued_runs(context.instance, decision.connection_id, decision.detail.get("state", ""))
        context.log.info("paused %s: canceled queued runs %s", decision.connection_id, canceled)
    return decision_requests(decision, url, registry, settings, key)
