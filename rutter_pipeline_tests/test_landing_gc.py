"""The landing paces the cyclic garbage collector (ingest._collector_paced) and leaves it as it found it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from datetime import timedelta

import pytest

from rutter_pipeline import ingest
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.ingest import Scope, land_scope
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline_tests.fixtures.pipeline import Pipeline


class _Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """Whatever a test does to the collector, the next test finds it on and with nothing frozen."""
    frozen = gc.get_freeze_count()
    yield
    gc.enable()
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()


def test_inside_automatic_collection_is_off_and_the_pacing_call_frees_cycles(collector_restored) -> None:
    gc.enable()
    old_cycle = weakref.ref(_Node())  # before the landing: still collectable as usual
    frozen_before = gc.get_freeze_count()
    with ingest._collector_paced() as collect_young:
        assert not gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before
        cycle = weakref.ref(_Node())
        # Many allocations would trigger a young collection with the collector on; paced, none runs.
        junk = [[i] for i in range(50_000)]
        del junk
        assert cycle() is not None
        collect_young()
        assert cycle() is None
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before
    gc.collect()
    assert old_cycle() is None


def test_a_collector_that_was_off_stays_off(collector_restored) -> None:
    gc.disable()
    with ingest._collector_paced():
        pass
    assert not gc.isenabled()


def test_the_collector_is_restored_when_the_landing_fails(collector_restored) -> None:
    gc.enable()
    frozen_before = gc.get_freeze_count()
    with pytest.raises(RuntimeError, match="boom"), ingest._collector_paced():
        raise RuntimeError("boom")
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before


@pytest.mark.postgres
def test_a_landing_of_several_validation_chunks_leaves_the_collector_on(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, collector_restored
) -> None:
    # Small chunks, so that this landing paces the collector several times.
    monkeypatch.setattr(ingest, "VALIDATION_CHUNK", 50)
    gc.enable()
    frozen_before = gc.get_freeze_count()
    start, end = pipeline.today - timedelta(days=30), pipeline.today - timedelta(days=1)
    outcome = land_scope(
        RutterClient.from_settings(Settings.from_env()),
        Loader(pipeline.warehouse_url),
        ORDERS,
        Scope(pipeline.connection_id, start, end),
        pipeline.access_token,
        "gc-run",
    )
    assert outcome.landed == len(pipeline.truth(ORDERS, start, end)) > 3 * 50
    assert outcome.report is not None and outcome.report.passed
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before
