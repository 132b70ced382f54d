"""The Rutter surface (``/versioned/...``) of the sandbox, conforming to the 2023-03-14 spec.

HTTP statuses (Rutter documents the error codes but not all statuses; these are the sandbox's
choices, and clients should key on ``error_code``). Every error body is
``{"error_type", "error_code", "error_message"}``.

- 400 INVALID_REQUEST / MISSING_VERSION_HEADER or INVALID_VERSION: ``X-Rutter-Version`` missing/unknown.
- 400 INVALID_REQUEST / MISSING_ACCESS_TOKEN: a connection-scoped route without ``access_token``.
- 400 INVALID_REQUEST / INVALID_PARAMETER: non-integer or inverted time filter, ``limit`` outside
  1..500, a bad cursor or one reused with other filters, ``created_at_*`` on ``/customers``, a bad enum.
- 401 CONNECTION_ERROR / INVALID_CREDENTIALS: bad Basic auth, or an unknown ``access_token``.
- 403 CONNECTION_ERROR / NEEDS_UPDATE: the merchant must re-authenticate.
- 403 CONNECTION_ERROR / CONNECTION_DISABLED: the connection is disabled.
- 404 INVALID_REQUEST / NOT_FOUND: unknown id on ``/orders/{id}``, ``/products/{id}``, ``/customers/{id}``.
- 409 CONNECTION_ERROR / PRODUCT_NOT_READY: before the initial sync completes (unless
  ``force_fetch=true`` on orders or transactions: then the part synced so far is returned).
- 429 RATE_LIMIT_ERROR / RATE_LIMIT_EXCEEDED: more than N requests in a sliding 10 s window per
  client id (default 500, Rutter's documented org limit), or an injected 429.
- 500/502/503 SERVER_ERROR / INTERNAL_SERVER_ERROR, BAD_GATEWAY, SERVICE_UNAVAILABLE: injected only.

Checks run in this order: fault injection, Basic auth, rate limit, version header, access token,
parameters, connection state. List bodies are assembled from each record's cached JSON bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rutter_pipeline.sandbox.connections import Connection
from rutter_pipeline.sandbox.faults import FaultInjector
from rutter_pipeline.sandbox.query import ENDPOINTS, BadRequest, encode_cursor, parse_list_query, select
from rutter_pipeline.sandbox.records import CREATED, KEY, TIMES, version_at
from rutter_pipeline.sandbox.state import Sandbox

JSON = "application/json"
API_VERSIONS = frozenset({"2023-02-07", "2023-03-14", "2024-04-30", "2024-08-31", "2025-02-28", "unstable"})
SERVER_ERRORS = {500: "INTERNAL_SERVER_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE"}
RAW_SEND_KEY = "sandbox.raw_send"


class ApiError(Exception):
    def __init__(
        self, status: int, error_type: str, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error_type, self.code, self.message = status, error_type, code, message
        self.headers = headers

    def response(self) -> Response:
        body = orjson.dumps({"error_type": self.error_type, "error_code": self.code, "error_message": self.message})
        return Response(body, self.status, headers=self.headers, media_type=JSON)


def invalid(message: str, code: str = "INVALID_PARAMETER") -> ApiError:
    return ApiError(400, "INVALID_REQUEST", code, message)


class DropConnection(Response):
    """Close the client's socket without sending a byte (a dropped connection).

    Uses the server's transport when the raw uvicorn ``send`` is reachable; otherwise starts a
    response it never finishes, which the server ends by closing the socket mid-body.
    """

    def __init__(self) -> None:
        super().__init__(b"", 200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_send = scope.get(RAW_SEND_KEY)
        cycle: Any = getattr(raw_send, "__self__", None)  # uvicorn's private RequestResponseCycle
        transport = getattr(cycle, "transport", None)
        if transport is not None and hasattr(cycle, "disconnected"):
            transport.close()
            cycle.disconnected = True  # uvicorn then skips its own 500 answer
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000"), (b"content-type", JSON.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b'{"orders": [', "more_body": True})
        raise ConnectionAbortedError("sandbox fault: dropped connection")


Handler = Callable[[Request, Connection], Response]  # a scoped endpoint: the access_token's connection


class RutterApi:
    def __init__(self, sandbox: Sandbox, faults: FaultInjector) -> None:
        self.sb = sandbox
        self.faults = faults
        cfg = sandbox.config
        self._expected_auth = "Basic " + base64.b64encode(f"{cfg.client_id}:{cfg.client_secret}".encode()).decode()
        self._request_ids = itertools.count(1)

    def routes(self) -> list[Route]:
        table: list[tuple[str, Callable[[Request], Response]]] = [
            ("/connections", self.list_connections),
            ("/connections/access_token", self._scoped(self.fetch_connection)),
            ("/connections/status", self._scoped(self.connection_status)),
            ("/store", self._scoped(self.store)),
        ]
        for entity in ENDPOINTS:
            table.append((f"/{entity}", self._scoped(self._list_handler(entity))))
            if ENDPOINTS[entity].single_envelope:
                table.append((f"/{entity}/{{id}}", self._scoped(self._get_handler(entity))))
        return [Route(f"/versioned{path}", self._endpoint(path, handler), methods=["GET"]) for path, handler in table]

    def _scoped(self, handler: Handler) -> Callable[[Request], Response]:
        return lambda request: handler(request, self._connection(request))

    def _endpoint(self, template: str, handler: Callable[[Request], Response]):
        async def endpoint(request: Request) -> Response:
            self.sb.last_request_at = time.monotonic()
            decision = self.faults.decide(template, has_cursor=bool(request.query_params.get("cursor")))
            if decision.delay:
                await asyncio.sleep(decision.delay)
            if decision.drop:
                self.sb.request_stats[(template, 0)] += 1
                return DropConnection()
            try:
                if decision.status is not None:
                    raise self._injected(decision.status, decision.retry_after)
                response = self._handle(request, handler)
            except ApiError as exc:
                response = exc.response()
            if decision.truncate and response.status_code == 200:
                response = Response(response.body[: max(1, len(response.body) // 2)], 200, media_type=JSON)
            response.headers["X-Rutter-Request-ID"] = f"sandbox-{next(self._request_ids)}"
            self.sb.request_stats[(template, response.status_code)] += 1
            return response

        return endpoint

    @staticmethod
    def _injected(status: int, retry_after: float | None) -> ApiError:
        if status == 429:
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
            return ApiError(
                429,
                "RATE_LIMIT_ERROR",
                "RATE_LIMIT_EXCEEDED",
                "Rate limit exceeded (injected by the sandbox).",
                headers,
            )
        return ApiError(
            status,
            "SERVER_ERROR",
            SERVER_ERRORS.get(status, "INTERNAL_SERVER_ERROR"),
            f"Upstream error {status} (injected by the sandbox).",
        )

    def _handle(self, request: Request, handler: Callable[[Request], Response]) -> Response:
        headers = request.headers
        if not self._authorized(headers.get("authorization")):
            raise ApiError(
                401,
                "CONNECTION_ERROR",
                "INVALID_CREDENTIALS",
                "Invalid client credentials: use HTTP Basic auth with your client id and secret.",
            )
        if not self.sb.limiter.try_acquire(self.sb.config.client_id, blocking=False):
            raise ApiError(
                429,
                "RATE_LIMIT_ERROR",
                "RATE_LIMIT_EXCEEDED",
                f"More than {self.sb.config.rate_limit_per_10s} requests in 10 seconds.",
            )
        version = headers.get("x-rutter-version")
        if not version:
            raise invalid("The X-Rutter-Version header is required (e.g. 2023-03-14).", "MISSING_VERSION_HEADER")
        if version not in API_VERSIONS:
            raise invalid(f"Unknown X-Rutter-Version {version!r}.", "INVALID_VERSION")
        return handler(request)

    def _connection(self, request: Request) -> Connection:
        """The connection of a scoped request's access_token (checked after the credentials and version)."""
        token = request.query_params.get("access_token")
        if not token:
            raise invalid("The access_token query parameter is required.", "MISSING_ACCESS_TOKEN")
        conn = self.sb.by_token.get(token)
        if conn is None:
            raise ApiError(401, "CONNECTION_ERROR", "INVALID_CREDENTIALS", "Unknown access_token.")
        return conn

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        if header == self._expected_auth:
            return True
        return hmac.compare_digest(header.encode(), self._expected_auth.encode())

    def _check_state(self, conn: Connection, force_fetch_allowed: bool) -> None:
        if conn.health == "needs_update":
            raise ApiError(
                403,
                "CONNECTION_ERROR",
                "NEEDS_UPDATE",
                "The merchant must re-authenticate this connection (see its link_url).",
            )
        if conn.health == "disabled":
            raise ApiError(
                403,
                "CONNECTION_ERROR",
                "CONNECTION_DISABLED",
                "This connection is disabled because of a problem; check /connections/status.",
            )
        if not conn.ready and not force_fetch_allowed:
            raise ApiError(
                409,
                "CONNECTION_ERROR",
                "PRODUCT_NOT_READY",
                "The requested product is not yet ready (initial sync running); try again later.",
            )

    @staticmethod
    def _json(doc: object) -> Response:
        return Response(orjson.dumps(doc), 200, media_type=JSON)

    # handlers ---------------------------------------------------------------------------------------
    def list_connections(self, request: Request) -> Response:
        return self._json({"connections": [c.list_item() for c in self.sb.connections.values()]})

    def fetch_connection(self, request: Request, conn: Connection) -> Response:
        return self._json(conn.fetch_payload(self.sb.now_ms))

    def connection_status(self, request: Request, conn: Connection) -> Response:
        return self._json(conn.status_payload(self.sb.now_ms))

    def store(self, request: Request, conn: Connection) -> Response:
        self._check_state(conn, False)
        return self._json({"connection": conn.envelope(), "store": conn.merchant.store()})

    def _list_handler(self, entity: str) -> Handler:
        endpoint = ENDPOINTS[entity]
        envelope_key = f',"{endpoint.envelope}":['.encode()

        def handle(request: Request, conn: Connection) -> Response:
            try:
                q = parse_list_query(endpoint, request.query_params, conn.id)
            except BadRequest as exc:
                raise invalid(str(exc)) from None
            self._check_state(conn, endpoint.force_fetch and q.force_fetch)
            now = self.sb.now_ms
            lower = conn.transactional_lower(now) if endpoint.transactional else None
            recs, nxt = select(conn.merchant, q, now, lower, q.limit)
            faults = self.faults.settings
            if faults.repeat_boundary and nxt is not None and len(recs) > 1:
                last, v = recs[-1]  # the next page starts with this page's last record again
                nxt = (last[TIMES][v] if q.by_updated else last[CREATED], last[KEY])
                self.faults.count("repeat_boundary")
            cursor = b"null" if nxt is None else orjson.dumps(encode_cursor(nxt, q.fingerprint(conn.id)))
            parts = [b'{"connection":', orjson.dumps(conn.envelope()), envelope_key]
            self.sb.append_records(parts, conn, entity, recs)
            parts += (b'],"next_cursor":', cursor, b"}")
            if faults.advance_minutes_per_page > 0:  # records change before the client asks for the next page
                self.sb.advance(faults.advance_minutes_per_page)
                self.faults.count("clock_step")
            return Response(b"".join(parts), 200, media_type=JSON)

        return handle

    def _get_handler(self, entity: str) -> Handler:
        endpoint = ENDPOINTS[entity]

        def handle(request: Request, conn: Connection) -> Response:
            force = request.query_params.get("force_fetch") == "true"
            self._check_state(conn, endpoint.force_fetch and force)
            now = self.sb.now_ms
            rec_id = request.path_params["id"]
            rec = conn.merchant.find(entity, rec_id)
            lower = conn.transactional_lower(now) if endpoint.transactional else None
            if rec is None or rec[CREATED] > now or (lower is not None and rec[CREATED] < lower):
                raise ApiError(
                    404, "INVALID_REQUEST", "NOT_FOUND", f"No {endpoint.single_envelope} with id {rec_id!r}."
                )
            body = b"".join(
                (
                    b'{"connection":',
                    orjson.dumps(conn.envelope()),
                    f',"{endpoint.single_envelope}":'.encode(),
                    self.sb.record_bytes(conn, entity, rec, version_at(rec, now)),
                    b"}",
                )
            )
            return Response(body, 200, media_type=JSON)

        return handle
