"""The Dagster pool the landing assets share, created when connections are added, before any run.

Dagster creates a pool's row at the first step that claims it, with a plain INSERT; on PostgreSQL two
runs starting together on a new instance race, and the loser fails with a UniqueViolation on
``concurrency_limits`` (dagster-io/dagster#33552, open in 1.13). Onboarding (``connections add`` /
``import`` and the lifecycle sensor) comes before the first run of a connection, so it creates the row.
"""

import dagster as dg

RUTTER_POOL = "rutter_api"


def ensure_pool(instance: dg.DagsterInstance) -> None:
    """Create the ``rutter_api`` pool at the instance's default limit when it has none.

    Nothing to do when the instance sets no default pool limit (the pool is then unlimited and has no
    row) or the row exists: initializing an existing row is the statement that fails on PostgreSQL.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return
    if RUTTER_POOL in storage.get_concurrency_keys():
        return
    try:
        storage.initialize_concurrency_limit_to_default(RUTTER_POOL)
    except Exception:
        # another process (a second import, the sensor) created it between our read and our insert
        if RUTTER_POOL not in storage.get_concurrency_keys():
            raise
