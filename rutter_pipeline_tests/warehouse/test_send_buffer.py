"""The loader's connections carry more COPY data in flight through a Unix socket (see
``copy.widen_send_buffer``), and leave a TCP socket's self-tuned buffer alone."""

from __future__ import annotations

import os
import socket
import sys
from datetime import date
from pathlib import Path

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse import copy as copy_module
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.session import transaction
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's socket limits"),
]

DAY = date(2024, 3, 4)


def _send_buffer(conn: psycopg.Connection) -> tuple[int, int]:
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        return sock.family, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def test_a_loader_connection_gets_the_wider_send_buffer_on_a_unix_socket(pg_url: str) -> None:
    with psycopg.connect(pg_url) as plain:
        family, default = _send_buffer(plain)
    with transaction(Loader(pg_url).url) as conn:
        assert _send_buffer(conn)[0] == family
        widened = _send_buffer(conn)[1]
    if family == socket.AF_UNIX:
        # Linux doubles the size asked for (its bookkeeping) and caps the request at wmem_max.
        cap = int(Path("/proc/sys/net/core/wmem_max").read_text())
        assert widened == 2 * min(copy_module.SOCKET_SEND_BUFFER, cap)
        if cap > default:
            assert widened > default
    else:
        # TCP (the PostgreSQL service): untouched, so the kernel keeps tuning it.
        assert widened == default


def test_a_landing_through_the_wider_buffer_stores_every_record(warehouse: str) -> None:
    """A COPY several times the buffer's size arrives whole, every record once."""
    records = Records(seed=5)
    orders = [records.order(DAY) for _ in range(6000)]
    stats = Loader(warehouse).land(ORDERS, "conn-buf", DAY, DAY, [orders[:2500], orders[2500:]], "run-buf")
    assert stats.total == len(orders)
    with psycopg.connect(warehouse) as conn:
        stored = conn.execute("SELECT record->>'id', octet_length(record::text) FROM landing.orders").fetchall()
    assert sorted(i for i, _ in stored) == sorted(o["id"] for o in orders)
    assert sum(n for _, n in stored) > 2 * copy_module.SOCKET_SEND_BUFFER
