"""What a data engineer sees, in a real browser: headless Chromium against ``rutter-pipeline dev``.

Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it when missing), driven by
Playwright's Python API with ``executable_path``: no ``playwright install``, no downloaded browser.
One dev stack with two demo merchants whose history spans two months; once their history backfills
succeeded, the pages must SHOW:

- the lineage: the groups landing -> warehouse -> marts, left to right;
- ``warehouse/orders``: its column schema (every column of the entity table) and a row count that is
  the warehouse's count for the partition its latest materialization names;
- one partition (a connection's earlier month): its own row count and days, not the range run's totals;
- the ``connections`` asset: each connection id with its platform, as the registry and the sandbox have it.

All checks run, each leaves a screenshot under ``.state/browser/``, and the test fails listing every
check that failed. One test, not four, so that ``pytest -n 2`` starts one stack for them.
"""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests

from rutter_pipeline.defs.catalog import entity_schema
from rutter_pipeline.devstack import DEMO_PLATFORMS
from rutter_pipeline.entities import ENTITIES
from rutter_pipeline.warehouse.embedded import start_embedded_postgres, stop_embedded_postgres, with_database
from rutter_pipeline_tests.test_dev_stack import free_port, graphql

LOAD_TIMEOUT = 480  # a loaded 2-core machine: the stack's start, then two history backfills
pytestmark = [pytest.mark.slow, pytest.mark.timeout(LOAD_TIMEOUT + 420)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("RUTTER_TEST_CHROMIUM") or "/usr/bin/chromium")
SHOTS = ROOT / ".state" / "browser"
CONNECTIONS = 2
PAGE_TIMEOUT_MS = 60_000

PARTITION_KEY = re.compile(r"^[0-9a-f-]{36}\|\d{4}-\d{2}-01$")  # <connection id>|<month>
HISTORY_RUNS = """{ runsOrError(filter: {tags: [{key: "rutter/trigger", value: "history"}]}) {
  ... on Runs { results { runId status } } } }"""


def history_days(today: date) -> int:
    """Days of sandbox history that always reach into the previous month: a range run then covers two
    month partitions whose counts differ from the run's totals."""
    return today.day + 3


@dataclass
class Stack:
    ui: str
    warehouse: str
    state: Path
    log: Path

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else "(no dev.log yet)"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it when it is missing)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def stack(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``rutter-pipeline dev`` with two demo merchants, after their history backfills succeeded."""
    tmp = tmp_path_factory.mktemp("browser")
    state, port = tmp / "state", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUTTER_", "WAREHOUSE_URL", "DAGSTER_"))}
    env["RUTTER_PIPELINE_STATE_DIR"] = str(state)
    # Nothing but the history backfills writes orders while the pages are read: the counts they show
    # are compared with the warehouse's (no incremental syncs from the schedule or the order webhooks).
    env["RUTTER_INCREMENTAL_CRON"] = "0 0 1 1 *"
    env["RUTTER_WEBHOOK_DEBOUNCE_SECONDS"] = "3600"
    days = history_days(datetime.now(UTC).date())
    cmd = [str(BIN / "rutter-pipeline"), "dev", "--port", str(port), "--connections", str(CONNECTIONS)]
    with (tmp / "stdout.txt").open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--history-days", str(days)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = f"http://127.0.0.1:{port}"
    result = Stack(ui, "", state, state / "dev.log")
    try:
        deadline = time.monotonic() + LOAD_TIMEOUT
        while True:
            assert proc.poll() is None, f"dev exited with {proc.returncode}:\n{result.tail()}"
            assert time.monotonic() < deadline, f"the demo merchants' history did not load:\n{result.tail()}"
            try:
                runs = graphql(port, HISTORY_RUNS)["runsOrError"]["results"]
            except requests.RequestException:
                runs = []
            if len(runs) >= CONNECTIONS and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                assert {r["status"] for r in runs} == {"SUCCESS"}, f"{runs}\n{result.tail()}"
                break
            time.sleep(2)
        result.warehouse = with_database(
            start_embedded_postgres(state / "postgres", persistent=True), "rutter_warehouse"
        )
        yield result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # dev stops its children itself (test_dev_stop.py)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_embedded_postgres(state / "postgres")


def month_count(warehouse: str, connection_id: str, month: date) -> int:
    with psycopg.connect(warehouse) as conn:
        row = conn.execute(
            "SELECT count(*) FROM rutter.orders WHERE connection_id = %s"
            " AND _partition_date >= %s AND _partition_date < (%s::date + interval '1 month')",
            (connection_id, month, month),
        ).fetchone()
    return int(row[0]) if row else 0


def registry(warehouse: str) -> dict[str, str | None]:
    with psycopg.connect(warehouse) as conn:
        return dict(conn.execute("SELECT connection_id, platform FROM rutter.connections").fetchall())


def metadata_value(page, label: str) -> str:
    """The value next to ``label`` in the metadata table the page shows."""
    from playwright.sync_api import expect

    row = page.locator("tr").filter(has=page.get_by_text(label, exact=True)).first
    expect(row).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    return row.locator("td").nth(1).inner_text().strip()


def shot(page, name: str, locator=None) -> None:
    """A screenshot of what the check looked at: the pages scroll inside a pane, so scroll to it first."""
    if locator is not None:
        locator.scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / f"{name}.png")


def check_lineage(page, stack: Stack) -> None:
    from playwright.sync_api import expect

    page.goto(f"{stack.ui}/asset-groups")
    boxes = {}
    for group in ("landing", "warehouse", "marts"):
        node = page.locator(f'[data-tooltip="{group}"]').first  # the group's box in the graph, not the sidebar
        expect(node).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        boxes[group] = node.bounding_box()
    shot(page, "lineage")
    x = {group: box["x"] for group, box in boxes.items() if box}
    assert len(x) == 3 and x["landing"] < x["warehouse"] < x["marts"], f"groups left to right: {x}"


def check_orders_catalog(page, stack: Stack) -> None:
    from playwright.sync_api import expect

    page.goto(f"{stack.ui}/assets/warehouse/orders")
    expect(page.get_by_text("Columns", exact=True).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    expect(page.get_by_text("Row count", exact=True).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    # the latest materialization's partition key loads after the rest of the status
    expect(page.get_by_text(PARTITION_KEY).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    shot(page, "warehouse_orders")
    shot(page, "warehouse_orders_columns", page.get_by_text("Columns", exact=True).first)
    lines = [line.strip() for line in page.inner_text("body").splitlines() if line.strip()]
    columns = [c.name for c in entity_schema(ENTITIES["orders"]).columns]
    missing = [c for c in columns if c not in lines]
    assert not missing, f"columns the page does not show: {missing}"
    shown = int(lines[lines.index("Row count") + 1].replace(",", ""))
    after = lines[lines.index("Latest materialization") + 1 :]
    partition = next(line for line in after[:3] if PARTITION_KEY.match(line))  # after "<n> minutes ago"
    connection_id, month = partition.split("|")
    assert shown == month_count(stack.warehouse, connection_id, date.fromisoformat(month)), (partition, shown)


def check_partition_counts(page, stack: Stack) -> None:
    """An earlier month of a connection: the range run that loaded two months reports each its own."""
    connection_id = sorted(registry(stack.warehouse))[0]
    month = (datetime.now(UTC).date().replace(day=1) - timedelta(days=1)).replace(day=1)
    key = f"{connection_id}|{month.isoformat()}"
    page.goto(f"{stack.ui}/assets/warehouse/orders?view=partitions&partition={quote(key)}")
    shown = int(metadata_value(page, "dagster/row_count").replace(",", ""))
    days = metadata_value(page, "days")
    shot(page, "warehouse_orders_partition", page.get_by_text("dagster/row_count", exact=True).first)
    expected = month_count(stack.warehouse, connection_id, month)
    assert expected > 0 and shown == expected, f"{key}: the page shows {shown}, the warehouse holds {expected}"
    assert days.startswith(month.isoformat()[:8]) and days.split("..")[-1].startswith(month.isoformat()[:8]), days
    range_inserted = int(metadata_value(page, "range/inserted").replace(",", ""))
    assert range_inserted > shown, f"the range's total ({range_inserted}) should cover more than this month"


def check_connections(page, stack: Stack) -> None:
    """The connections asset maps each id to its platform. It is refreshed once Rutter told the
    merchants' names, which may be after the backfills: the page is reloaded until it shows them."""
    from playwright.sync_api import expect

    # The platform_tag_sensor learns a webhook-registered merchant's platform at its first run, on
    # its own interval: on a loaded machine that can come after the backfills this test waited for.
    deadline = time.monotonic() + 180
    platforms = registry(stack.warehouse)
    while None in platforms.values() and time.monotonic() < deadline:
        time.sleep(2)
        platforms = registry(stack.warehouse)
    assert set(platforms.values()) == set(DEMO_PLATFORMS[:CONNECTIONS]), platforms
    rows = {cid: page.locator("tr").filter(has_text=cid).filter(has_text=str(p)) for cid, p in platforms.items()}
    page.goto(f"{stack.ui}/assets/connections")
    deadline = time.monotonic() + 180
    while True:
        # the latest materialization's metadata: its "merchants" table
        expect(page.get_by_text("merchants", exact=True).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        try:
            for row in rows.values():
                expect(row.first).to_be_visible(timeout=5000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                shot(page, "connections", page.get_by_text("merchants", exact=True).first)
                raise
            page.reload()
    shot(page, "connections", next(iter(rows.values())).first)


CHECKS: dict[str, Callable] = {
    "lineage shows landing -> warehouse -> marts": check_lineage,
    "warehouse/orders shows its columns and row count": check_orders_catalog,
    "a partition shows its own count": check_partition_counts,
    "the connections view shows the platforms": check_connections,
}


def test_the_ui_shows_lineage_table_metadata_partition_counts_and_merchants(chromium: Path, stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    failures = []
    with sync_playwright() as playwright:
        # Root (CI containers) cannot use Chromium's sandbox.
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            # Dagster's "Join the community" dialog covers the page on a first visit.
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
            for name, check in CHECKS.items():
                try:
                    check(page, stack)
                except Exception as exc:
                    shot(page, f"failed_{check.__name__}")
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            browser.close()
    assert not failures, "\n".join(failures) + f"\n(screenshots in {SHOTS})\n{stack.tail()}"
