"""Fixtures of the receiver tests: a migrated warehouse and the receiver serving it on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline.webhooks import run_receiver
from rutter_pipeline_tests.webhooks.helpers import SECRET


@pytest.fixture
def warehouse(pg_url: str) -> str:
    migrate(pg_url)
    return pg_url


@pytest.fixture
def receiver_url(warehouse: str) -> Iterator[str]:
    with run_receiver(warehouse, SECRET) as url:
        yield url
