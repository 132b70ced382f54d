"""``create_app``: the receiver's ASGI app (``POST /webhooks/rutter``, ``GET /healthz``).

A request is checked in the cheapest order that never trusts unauthenticated input: size (413),
signature over the raw bytes (401), shape (400); then one short transaction stores it (200, also
for a duplicate, so Rutter stops retrying). Nothing is fetched from Rutter here. Database work
runs in worker threads, at most one per pooled connection, so the event loop keeps accepting.
A database failure answers 503: Rutter retries, and the inbox's dedup absorbs the repeat.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import orjson
import psycopg
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from rutter_pipeline.connections.inbox import Stored, store_event
from rutter_pipeline.rutter.redact import register_secret
from rutter_pipeline.rutter.signatures import HEADER, verify
from rutter_pipeline.webhooks.body import BodyTooLarge, read_limited
from rutter_pipeline.webhooks.logs import install_receiver_log_filters
from rutter_pipeline.webhooks.payload import InvalidWebhook, Webhook, parse_webhook
from rutter_pipeline.webhooks.pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/rutter"


def _json(status: int, doc: dict) -> Response:
    return Response(orjson.dumps(doc), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class Receiver:
    """The request handlers and what they share: the secret, the pool, the thread limiter."""

    def __init__(self, warehouse_url: str, client_secret: str, max_body_bytes: int, pool_size: int) -> None:
        self._secret = client_secret
        self.max_body_bytes = max_body_bytes
        self.pool = ConnectionPool(warehouse_url, pool_size)
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at first use

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.pool.size)
        return self._limiter

    async def receive(self, request: Request) -> Response:
        try:
            body = await read_limited(request, self.max_body_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {self.max_body_bytes} bytes")
        except ClientDisconnect:  # the sender gave up mid-body; it will retry
            return _error(400, "incomplete body")
        if not verify(body, request.headers.get(HEADER), self._secret):
            return _error(401, "missing or invalid X-Rutter-Signature")
        try:
            hook = parse_webhook(body)
        except InvalidWebhook as exc:
            return _error(400, str(exc))
        try:
            stored = await anyio.to_thread.run_sync(self._store, hook, limiter=self.limiter)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning(
                "webhook %s not stored (%s); answering 503 so that Rutter retries", hook.code, type(exc).__name__
            )
            return _error(503, "storage unavailable, retry later")
        if stored.duplicate:
            return _json(200, {"status": "duplicate"})
        return _json(200, {"status": "stored", "id": stored.id})

    def _store(self, hook: Webhook) -> Stored:
        if hook.access_token:
            register_secret(hook.access_token)  # masked should it ever reach a log line
        # One retry on a connection that went stale while pooled (e.g. the server restarted).
        for attempt in Retrying(
            stop=stop_after_attempt(2), retry=retry_if_exception_type(psycopg.OperationalError), reraise=True
        ):
            with attempt, self.pool.connection() as conn:
                stored = store_event(
                    conn,
                    hook.body_sha256,
                    event_type=hook.type,
                    code=hook.code,
                    connection_id=hook.connection_id,
                    payload=hook.payload,
                    access_token=hook.access_token,
                )
        log.debug(
            "webhook %s for %s: %s",
            hook.code,
            hook.connection_id,
            "duplicate" if stored.duplicate else f"stored as event {stored.id}",
        )
        return stored

    async def health(self, request: Request) -> Response:
        try:
            await anyio.to_thread.run_sync(self._ping, limiter=self.limiter)
        except (psycopg.Error, PoolTimeout):
            return _error(503, "warehouse unavailable")
        return _json(200, {"status": "ok"})

    def _ping(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("SELECT 1")
            conn.rollback()


def create_app(
    warehouse_url: str, client_secret: str, *, max_body_bytes: int = 1_000_000, pool_size: int = 8
) -> Starlette:
    """The receiver's ASGI app. The warehouse must be migrated; connections open on first use."""
    if not client_secret:
        raise ValueError("the client secret is required: it verifies the webhooks' signatures")
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    register_secret(client_secret)
    install_receiver_log_filters()
    receiver = Receiver(warehouse_url, client_secret, max_body_bytes, pool_size)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            receiver.pool.close()

    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    return app
