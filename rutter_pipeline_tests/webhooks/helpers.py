"""Signed webhook bodies, a look at what the inbox stored, and a cursor reader like the sensors'."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import orjson
import psycopg
import requests
from psycopg.rows import dict_row

from rutter_pipeline.connections.inbox import read_events
from rutter_pipeline.rutter.signatures import HEADER, sign

SECRET = "webhook-receiver-test-secret-4f1d9c"
TOKEN = "access-sandbox-7d2c9e41-0b3a-4c55-9f1e-2a6b8c0d4e11"


def connection_event(code: str = "INITIAL_UPDATE", connection_id: str | None = None, **extra: Any) -> dict:
    return {
        "type": "CONNECTION",
        "code": code,
        "connection_id": connection_id or str(uuid.uuid4()),
        "access_token": TOKEN,
        **extra,
    }


def post(
    url: str,
    body: bytes | dict,
    *,
    secret: str | None = SECRET,
    signature: str | None = None,
    session: requests.Session | None = None,
    **kwargs: Any,
) -> requests.Response:
    """POST ``body`` signed with ``secret`` (or with the given ``signature``; neither: unsigned)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[HEADER] = signature
    elif secret is not None:
        headers[HEADER] = sign(raw, secret)
    return (session or requests).post(url, data=raw, headers=headers, timeout=10, **kwargs)


def stored_rows(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM rutter.webhook_events ORDER BY id").fetchall()


def inbox_text(url: str) -> str:
    """Every stored row as text: what must never contain a token or the secret."""
    with psycopg.connect(url) as conn:
        return "\n".join(t for (t,) in conn.execute("SELECT to_jsonb(w)::text FROM rutter.webhook_events w"))


class CursorReader:
    """A sensor-like reader running in a thread: reads after its id cursor until stopped and drained."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> CursorReader:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _follow(self) -> None:
        cursor = 0
        while True:
            finished = self._done.is_set()  # read once more after the writers are done
            batch = read_events(self.url, cursor)
            self.seen.extend(e.id for e in batch)
            cursor = batch[-1].id if batch else cursor
            if finished and not batch:
                return
            time.sleep(0.002)
