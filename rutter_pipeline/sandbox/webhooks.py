"""Webhook delivery as Rutter does it: signed POSTs from a background sender with retries.

Requests to the API never wait for deliveries: the clock enqueues payloads and one sender thread
POSTs them. ``X-Rutter-Signature`` is ``sha256=`` + base64(HMAC-SHA256(raw body, client secret)),
computed here independently of the project's client code (the simulator plays Rutter; sharing
the code would hide a bug in both). A non-2xx answer or a connection error is retried up to
``max_retries`` times with exponential backoff (``retry_base * 2**attempt``), each retry scheduled
without blocking the others. Options reproduce Rutter's documented behaviour that a payload may
arrive twice, and an undocumented but plausible one: a batch in shuffled order.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import orjson
import requests

log = logging.getLogger(__name__)


def sign(body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


@dataclass
class Delivery:
    id: int
    body: bytes
    code: str
    type: str
    connection_id: str | None
    attempts: int = 0
    status: str = "pending"  # pending | delivered | failed
    last_status: int | None = None
    last_error: str | None = None
    enqueued_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def summary(self) -> dict:
        return {
            "id": self.id,
            "code": self.code,
            "type": self.type,
            "connection_id": self.connection_id,
            "attempts": self.attempts,
            "status": self.status,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "enqueued_at": self.enqueued_at,
            "finished_at": self.finished_at,
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
        }


class WebhookSender:
    def __init__(
        self,
        *,
        url: str | None,
        secret: str,
        retry_base: float,
        max_retries: int,
        timeout: float,
        duplicate: bool,
        shuffle: bool,
        seed: int,
    ) -> None:
        self.url = url
        self._secret = secret
        self.retry_base = retry_base
        self.max_retries = max_retries
        self.timeout = timeout
        self.duplicate = duplicate
        self.shuffle = shuffle
        self._rng = random.Random(f"webhooks:{seed}")
        self._ids = itertools.count(1)
        self._heap: list[tuple[float, int, Delivery]] = []
        self._log: list[Delivery] = []
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = False
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def configure(self, **options: object) -> None:
        allowed = {"url", "retry_base", "max_retries", "duplicate", "shuffle", "timeout"}
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(f"unknown webhook options {sorted(unknown)}; known: {sorted(allowed)}")
        with self._cond:
            for key, value in options.items():
                setattr(self, key, value)

    def enqueue(self, payloads: list[dict]) -> int:
        """Queue one batch of payloads (one clock step); returns how many deliveries were queued."""
        if not self.url or not payloads:
            return 0
        batch = list(payloads)
        if self.duplicate:
            batch = [p for p in batch for _ in (0, 1)]
        if self.shuffle:
            self._rng.shuffle(batch)
        now = time.monotonic()
        with self._cond:
            for payload in batch:
                d = Delivery(
                    next(self._ids),
                    orjson.dumps(payload),
                    str(payload.get("code")),
                    str(payload.get("type")),
                    payload.get("connection_id"),
                )
                self._log.append(d)
                heapq.heappush(self._heap, (now, d.id, d))
            self._cond.notify_all()
        return len(batch)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())
                    self._cond.wait(wait)
                if self._stop:
                    return
                _, _, d = heapq.heappop(self._heap)
                self._in_flight += 1
                url, secret, timeout = self.url, self._secret, self.timeout
            try:
                self._attempt(d, url, secret, timeout)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if d.status == "pending":
                        heapq.heappush(
                            self._heap, (time.monotonic() + self.retry_base * 2 ** (d.attempts - 1), d.id, d)
                        )
                    self._cond.notify_all()

    def _attempt(self, d: Delivery, url: str | None, secret: str, timeout: float) -> None:
        d.attempts += 1
        ok = False
        try:
            if not url:
                raise RuntimeError("no webhook URL configured")
            resp = self._session.post(
                url,
                data=d.body,
                timeout=timeout,
                headers={"Content-Type": "application/json", "X-Rutter-Signature": sign(d.body, secret)},
            )
            d.last_status, d.last_error = resp.status_code, None
            ok = 200 <= resp.status_code < 300
        except Exception as exc:  # connection refused, reset, timeout: all retried
            d.last_status, d.last_error = None, type(exc).__name__
        if ok:
            d.status, d.finished_at = "delivered", time.time()
        elif d.attempts > self.max_retries:
            d.status, d.finished_at = "failed", time.time()
            log.warning("webhook %s (%s) failed after %d attempts", d.id, d.code, d.attempts)

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def log_entries(self) -> list[dict]:
        with self._cond:
            return [d.summary() for d in self._log]

    def counts(self) -> dict[str, int]:
        with self._cond:
            out = {
                "queued": len(self._log),
                "delivered": 0,
                "failed": 0,
                "pending": 0,
                "attempts": sum(d.attempts for d in self._log),
            }
            for d in self._log:
                out[d.status] += 1
            return out

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._session.close()
