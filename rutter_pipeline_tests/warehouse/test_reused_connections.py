"""Inside ``reusing_connections`` one thread's transactions share connections (``session.connect``):
each still commits or rolls back on its own, a backend that went away is replaced, and nothing is
left open when the block ends."""

from __future__ import annotations

import threading
import time
from datetime import date

import psycopg
import pytest
from psycopg.rows import dict_row

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.session import connect, reusing_connections, transaction
from rutter_pipeline.warehouse.sync_state import get_watermark
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

DAY = date(2024, 3, 4)


def _pid(url: str) -> int:
    with transaction(url) as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _alive(url: str, pid: int) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1


def _wait_gone(url: str, pid: int) -> None:
    deadline = time.monotonic() + 10
    while _alive(url, pid):
        assert time.monotonic() < deadline, f"backend {pid} still there"
        time.sleep(0.05)


def test_transactions_in_the_block_share_one_backend_which_is_closed_at_its_end(warehouse: str) -> None:
    assert _pid(warehouse) != _pid(warehouse)  # outside a block, a connection per transaction
    with reusing_connections():
        pids = {_pid(warehouse) for _ in range(5)}
        with connect(warehouse, row_factory=dict_row) as conn:
            assert conn.execute("SELECT pg_backend_pid() AS pid").fetchone() == {"pid": min(pids)}
        with connect(warehouse) as conn:  # the row factory was the block's, not the connection's
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert len(pids) == 1
    _wait_gone(warehouse, pids.pop())


def test_each_transaction_commits_or_rolls_back_on_its_own(warehouse: str) -> None:
    with reusing_connections():
        with transaction(warehouse) as conn:
            conn.execute("CREATE TABLE public.t (n int)")
            conn.execute("INSERT INTO public.t VALUES (1)")
        with pytest.raises(RuntimeError), transaction(warehouse) as conn:
            conn.execute("INSERT INTO public.t VALUES (2)")
            raise RuntimeError("the caller's failure")
        with pytest.raises(psycopg.errors.UndefinedTable), transaction(warehouse) as conn:
            conn.execute("INSERT INTO public.missing VALUES (3)")
        with transaction(warehouse) as conn:
            assert conn.execute("SELECT array_agg(n) FROM public.t").fetchone()[0] == [1]
    with psycopg.connect(warehouse) as conn:  # committed for everyone, not only inside the block
        assert conn.execute("SELECT array_agg(n) FROM public.t").fetchone()[0] == [1]


def test_a_nested_transaction_gets_a_connection_of_its_own(warehouse: str) -> None:
    with reusing_connections(), transaction(warehouse) as outer:
        outer.execute("CREATE TABLE public.t (n int)")
        with transaction(warehouse) as inner:  # cannot see the outer's uncommitted table
            assert inner.execute("SELECT to_regclass('public.t')").fetchone()[0] is None
            assert inner.info.backend_pid != outer.info.backend_pid


def test_a_backend_terminated_while_idle_is_replaced_not_used(warehouse: str) -> None:
    with reusing_connections():
        first = _pid(warehouse)
        with psycopg.connect(warehouse, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        _wait_gone(warehouse, first)
        second = _pid(warehouse)
        assert second != first
        assert get_watermark(warehouse, "conn-1", ORDERS.name) is None  # the other call sites reuse it too
        assert _pid(warehouse) == second


def test_merges_one_after_another_on_a_reused_connection_keep_their_temporary_buffers(
    loader: Loader, records: Records, warehouse: str
) -> None:
    """SET LOCAL temp_buffers is refused once a session has used a temporary table: the reused
    connection sets it once for the session, before the first merge's stage."""
    orders = [records.order(DAY) for _ in range(20)]
    with reusing_connections():
        for run in ("run-1", "run-2"):
            loader.land(ORDERS, "conn-1", DAY, DAY, [orders], run)
            loader.merge(ORDERS, "conn-1", DAY, DAY, run)
        stats = loader.upsert(ORDERS, "conn-1", [records.order(DAY) for _ in range(5)], "run-3")
        with transaction(warehouse) as conn:
            assert conn.execute("SHOW temp_buffers").fetchone()[0] == "256MB"
            assert conn.execute("SELECT count(*) FROM rutter.orders").fetchone()[0] == 25
    assert stats.inserted == 5


def test_another_thread_never_gets_the_blocks_connections(warehouse: str) -> None:
    seen: list[int] = []
    with reusing_connections():
        mine = _pid(warehouse)
        thread = threading.Thread(target=lambda: seen.append(_pid(warehouse)))
        thread.start()
        thread.join()
        assert _pid(warehouse) == mine
    assert seen and seen[0] != mine
