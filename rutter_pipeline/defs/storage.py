"""Dagster's PostgreSQL run and event-log storage, keeping connections open per process.

dagster-postgres opens a new PostgreSQL connection for every storage call outside the webserver
(SQLAlchemy's ``NullPool``), and a connection costs the server a backend process: ~15 ms on the
embedded server. A range run logs one "materialization planned" event per partition and asset when it
is created, each written through two or three connections, so a year of two assets spent ~15 s before
its first step, and every run worker, sensor tick and daemon pass paid the same per event.

These subclasses change only the engine: a ``QueuePool`` of two connections kept open, pinged before
use (a restarted server costs a retry, not an error), recycled hourly. A caller that finds both taken
opens an overflow connection that is closed when returned, as before, with no cap. A connection never
crosses a fork: a child that checks out one its parent opened drops it without closing it (closing
would end the parent's session) and opens its own.

``dagster.yaml`` names them; ``instance_storage_config`` is the same configuration for instances that
tests and benchmarks build in code.
"""

from __future__ import annotations

import os
from typing import Any, Self

import sqlalchemy as sa
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

# Two: storing an asset event asks whether a table exists on a second connection while the first is
# still open (dagster's _store_asset_event_tags), so one pooled connection would still mean a new
# session per asset event.
POOL_SIZE = 2
# No cap on overflow connections (opened and closed per use, as dagster-postgres does): the daemon's
# threads may all call the storage at once, and a capped pool would make them wait, then fail.
POOL_OVERFLOW = -1
POOL_RECYCLE_S = 3600


def pooled_engine(postgres_url: str, token_provider: Any = None) -> sa.engine.Engine:
    """An AUTOCOMMIT engine (as dagster-postgres uses) that keeps ``POOL_SIZE`` connections open."""
    engine = create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=True,
        pool_recycle=POOL_RECYCLE_S,
    )

    # SQLAlchemy's recipe for pools and os.fork / multiprocessing.
    @sa.event.listens_for(engine, "connect")
    def _remember_pid(dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @sa.event.listens_for(engine, "checkout")
    def _drop_if_inherited(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info["pid"] != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa.exc.DisconnectionError("connection opened by another process; reconnecting")

    return engine


class _Pooled:
    """Mixed in before a dagster-postgres storage: swaps its per-call engine for ``pooled_engine``."""

    postgres_url: str
    _engine: sa.engine.Engine
    _token_provider: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine.dispose()
        self._engine = pooled_engine(self.postgres_url, self._token_provider)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> Self:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    """dagster-postgres' event log on a pooled engine."""


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """dagster-postgres' run storage on a pooled engine."""


def instance_storage_config(postgres_url: str) -> dict[str, Any]:
    """The storage part of ``dagster.yaml`` for a Dagster database URL (psycopg2 driver, docs/architecture.md §6)."""
    config = {"postgres_url": postgres_url}
    return {
        "run_storage": {"module": __name__, "class": PooledPostgresRunStorage.__name__, "config": config},
        "event_log_storage": {"module": __name__, "class": PooledPostgresEventLogStorage.__name__, "config": config},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": config,
        },
    }
