"""COPY for the loads: the text encoding of rows, the queued writer and the socket tuning.

Shared by the landing (``landing.py``), the incremental upsert (``upsert.py``) and the load
transaction (``session.py``). docs/architecture.md §5.3.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psycopg
from psycopg.copy import QueuedLibpqWriter

log = logging.getLogger(__name__)

# Blocks of COPY data (up to 128 kB each) queued for the sending thread while landing: 16 MB at most.
COPY_QUEUE_BLOCKS = 128
# Bytes of COPY data a local (Unix-socket) connection may have in flight to the server; see
# widen_send_buffer. The kernel caps it at net.core.wmem_max and doubles it for its bookkeeping.
SOCKET_SEND_BUFFER = 4 << 20

# How orjson writes U+0000, which jsonb refuses.
NUL_ESCAPE = b"\\u0000"


def copy_escape(data: bytes) -> bytes:
    """A record's JSON as a COPY text field: JSON has no raw tabs or newlines, only backslashes to double."""
    return data.replace(b"\\", b"\\\\")


def copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class QueuedWriter(QueuedLibpqWriter):
    """psycopg's queued COPY writer with a queue of ``COPY_QUEUE_BLOCKS`` blocks instead of 1,024.

    A thread sends the COPY data while the landing's thread fetches and validates the next pages,
    so PostgreSQL parses one page while Python prepares the next. psycopg's queue holds up to
    1,024 blocks of 128 kB; a short queue keeps the overlap and bounds the memory.
    """

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        # Bound psycopg's own queue (its get() stays interruptible): put() reads maxsize on every call.
        self._queue.maxsize = COPY_QUEUE_BLOCKS


def widen_send_buffer(conn: psycopg.Connection, size: int = SOCKET_SEND_BUFFER) -> None:
    """Let a Unix-socket connection hold ``size`` bytes in flight instead of the kernel's ~200 kB.

    The landing's COPY is sent by a thread that needs the GIL for every block, while the fetch
    threads and the validation hold it for 10-50 ms at a time (``orjson.loads`` of a page, pandas).
    Through a Unix socket PostgreSQL can only read what the socket buffer holds (``wmem_default``,
    208 kB: about 80 orders, 3 ms of its work), so it waited for the client half of the landing
    (``ClientRead``). A 4 MB buffer carries it over those stalls: on 210k orders the landing step
    went from 27.6-33.0 s to 18.6-25.0 s (benchmarks/RESULTS.md). TCP sockets are left alone:
    setting a size there would switch off the kernel's own tuning of it, which already grows to
    ``tcp_wmem``'s maximum. Best effort: a platform that refuses keeps its default.
    """
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except OSError:
        return
    with sock:
        if sock.family == getattr(socket, "AF_UNIX", None):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                log.debug("could not widen the send buffer of the warehouse connection", exc_info=True)
