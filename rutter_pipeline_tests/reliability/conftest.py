"""Shared parts of the fault suite (issue 19): run the real pipeline, compare the warehouse with the
sandbox's ground truth, and count what the suite did.

Every fault case ends with ``Tally.converged``: the warehouse against what the sandbox serves (ids,
amounts, every field, child rows), counting records compared and mismatches. The figures (cases,
faults injected, records compared, mismatches) are printed at the end of the pytest session, also
under ``-n 2``: each worker appends its cases to one file named by the controller, which sums them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.ingest import landing_key, warehouse_key
from rutter_pipeline.defs.partitions import DAYS_TAG
from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

TALLY_ENV = "RUTTER_RELIABILITY_TALLY"
FIGURES = ("cases", "faults_injected", "records_compared", "mismatches")


def pytest_configure(config: pytest.Config) -> None:
    # The controller names the file before xdist starts its workers, which inherit the environment.
    if TALLY_ENV not in os.environ:
        fd, path = tempfile.mkstemp(prefix="reliability-tally-", suffix=".jsonl")
        os.close(fd)
        os.environ[TALLY_ENV] = path
        config._reliability_tally_owner = True  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not getattr(config, "_reliability_tally_owner", False):
        return
    path = Path(os.environ.pop(TALLY_ENV))
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.unlink(missing_ok=True)
    if not lines:
        return
    by_file: dict[str, Counter] = {}
    for line in lines:
        figures = by_file.setdefault(line["case"].split("::")[0], Counter())
        figures.update({"cases": 1, **{k: line[k] for k in FIGURES[1:]}})
    by_file["total"] = sum(by_file.values(), Counter())
    terminalreporter.write_sep("-", "reliability suite: " + ", ".join(f.replace("_", " ") for f in FIGURES))
    for name, figures in by_file.items():
        terminalreporter.write_line(f"{name}: " + ", ".join(str(figures[f]) for f in FIGURES))


@dataclasses.dataclass
class Tally:
    """What one case did: faults it injected, records it compared with the ground truth, mismatches."""

    case: str
    faults_injected: int = 0
    records_compared: int = 0
    mismatches: int = 0

    def faults(self, n: int) -> None:
        self.faults_injected += n

    def sandbox_faults(self, sandbox: SandboxHandle) -> int:
        """Count what the sandbox injected so far (and clear its faults): returns that number."""
        injected = sum(sandbox.control.stats()["faults_injected"].values())
        sandbox.control.clear_faults()
        self.faults_injected += injected
        return injected

    def compare(self, what: str, stored: list[dict], truth: list[dict]) -> None:
        """Count and assert: every true record once, equal in every field and child row, nothing else."""
        self.records_compared += len(truth) + sum(_children(r) for r in truth)
        ids = Counter(_ident(r) for r in stored)
        want = {_ident(r): r for r in truth}
        got = {_ident(r): r for r in stored}
        doubled = [k for k, n in ids.items() if n > 1]
        missing = sorted(want.keys() - got.keys())
        extra = sorted(got.keys() - want.keys())
        differ = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
        bad = len(doubled) + len(missing) + len(extra) + len(differ)
        self.mismatches += bad
        assert not bad, (
            f"{what}: {len(truth)} true records, {len(stored)} stored; doubled {doubled[:5]}, missing {missing[:5]}, "
            f"unexpected {extra[:5]}, different {differ[:5]}"
        )

    def converged(self, pipeline: Pipeline, specs: Iterable[EntitySpec], start: date, end: date | None = None) -> None:
        """The warehouse holds exactly the ground truth of ``specs`` for the days [start, end]."""
        for spec in specs:
            truth = pipeline.truth(spec, start, end)
            assert truth, f"no {spec.name} in the ground truth for {start}..{end}: the case would prove nothing"
            self.compare(f"{spec.name} {start}..{end}", pipeline.stored(spec, start, end), truth)


def _ident(record: dict) -> str:
    return f"{record.get('id')}|{record.get('created_at')}"


def _children(record: dict) -> int:
    return sum(len(v) for k, v in record.items() if k in ("line_items", "variants") and isinstance(v, list))


@pytest.fixture
def tally(request: pytest.FixtureRequest):
    """The case's counters, appended to the session's tally file when the test ends (pass or fail)."""
    case = Tally(request.node.nodeid)
    yield case
    with open(os.environ[TALLY_ENV], "a") as out:
        out.write(json.dumps(dataclasses.asdict(case)) + "\n")


def run_assets(
    pipeline: Pipeline,
    instance: dg.DagsterInstance,
    specs: Iterable[EntitySpec],
    start: date,
    end: date | None = None,
    *,
    rutter_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Land and merge days [start, end] of one month partition, as a re-run from the UI does
    (``rutter/days`` tag); ``rutter_config`` overrides the Rutter resource's config for the run."""
    end = end or start
    keys = [k for spec in specs for k in (landing_key(spec), warehouse_key(spec))]
    days = start.isoformat() if start == end else f"{start.isoformat()}..{end.isoformat()}"
    run_config = None
    if rutter_config:  # the whole resource config, as the launchpad takes it: credentials by variable name
        config = {"client_id": {"env": "RUTTER_CLIENT_ID"}, "client_secret": {"env": "RUTTER_CLIENT_SECRET"}}
        run_config = {"resources": {"rutter": {"config": config | rutter_config}}}
    return (
        pipeline.definitions()
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=instance,
            partition_key=pipeline.partition(start),
            tags={DAYS_TAG: days},
            asset_selection=keys,
            run_config=run_config,
            raise_on_error=False,
        )
    )


def other_connection(pipeline: Pipeline, **options: Any) -> Pipeline:
    """The same environment with another registered sandbox connection (``create_connection`` options)."""
    conn = pipeline.sandbox.control.create_connection(platform="SHOPIFY", **options)
    ConnectionRegistry(pipeline.warehouse_url).add(conn["connection_id"], conn["access_token"], platform="SHOPIFY")
    return dataclasses.replace(pipeline, connection_id=conn["connection_id"], access_token=conn["access_token"])


def table_rows(url: str, *tables: str) -> list[str]:
    """Every row of the given tables as text, sorted: a snapshot to show nothing changed."""
    with psycopg.connect(url) as conn:
        return sorted(r[0] for t in tables for r in conn.execute(f"SELECT to_jsonb(x)::text FROM {t} x"))
