"""Fixtures of the warehouse tests: a migrated database per test, a loader, seeded records."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline_tests.warehouse.factories import Records


@pytest.fixture
def warehouse(pg_url: str) -> str:
    """URL of a fresh database with the warehouse schema."""
    migrate(pg_url)
    return pg_url


@pytest.fixture
def loader(warehouse: str) -> Loader:
    return Loader(warehouse)


@pytest.fixture
def records() -> Records:
    return Records(seed=11)


def snapshot(url: str, schema: str = "rutter") -> dict[str, list[Any]]:
    """Every row of every table of ``schema`` (bookkeeping columns included), in a stable order."""
    with psycopg.connect(url) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
            )
        ]
        return {
            t: [r for (r,) in conn.execute(f"SELECT to_jsonb(x)::text FROM {schema}.{t} x ORDER BY 1")] for t in tables
        }
