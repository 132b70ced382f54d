"""``rutter-pipeline db migrate`` creates the schema through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from rutter_pipeline.warehouse.migrations import migration_ids

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]


def _cli(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WAREHOUSE_URL": url, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "rutter_pipeline.cli", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_migrate_creates_then_reports_up_to_date(pg_url: str) -> None:
    first = _cli(pg_url)
    assert first.returncode == 0, first.stderr
    ids = migration_ids()
    assert ids[:6] == ["0001_core", "0002_entities", "0003_marts", "0004_ingest_speed", "0005_load_log",
                       "0006_underwriting_marts"]  # fmt: skip
    assert f"applied {len(ids)} migration(s): {', '.join(ids)}" in first.stdout
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('rutter.orders') IS NOT NULL").fetchone() == (True,)
    second = _cli(pg_url)
    assert second.returncode == 0, second.stderr
    assert "warehouse schema is up to date" in second.stdout
