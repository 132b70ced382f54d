"""A small pool of psycopg connections for the receiver's request threads.

psycopg_pool is not a dependency, and a request is one short transaction, so this is all the
receiver needs: at most ``size`` connections, opened on demand, reused while healthy, and dropped
(never handed out again) once a query failed on them or they broke.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from rutter_pipeline.warehouse.migrations import psycopg_url


class PoolTimeout(RuntimeError):
    """No connection became free in time."""


class ConnectionPool:
    def __init__(self, url: str, size: int = 8, *, connect_timeout: int = 5) -> None:
        if size <= 0:
            raise ValueError(f"pool size must be positive, got {size}")
        self.size = size
        self._url = psycopg_url(url)
        self._connect_timeout = connect_timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._closed = False

    @contextmanager
    def connection(self, timeout: float = 10.0) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one unit of work; it goes back to the pool only if left clean."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        if not self._slots.acquire(timeout=timeout):
            raise PoolTimeout(f"no database connection free within {timeout} s")
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = self._take()
            yield conn
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            if conn is not None and not conn.closed:
                self._give_back(conn)
            self._slots.release()

    def _take(self) -> psycopg.Connection[Any]:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return psycopg.connect(self._url, connect_timeout=self._connect_timeout)
            if not conn.closed and not conn.broken:
                return conn

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        if self._closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
        else:
            self._idle.put(conn)

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when handed back."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
