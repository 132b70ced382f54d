"""The control API (``/_sandbox/...``): how tests, demos and benchmarks drive the sandbox.

Kept apart from the Rutter surface: no Basic auth, no faults, plain JSON. Errors are
``{"error": message}`` with 400 (bad input) or 404 (unknown connection).
"""

from __future__ import annotations

import asyncio
import resource
from datetime import date

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rutter_pipeline.sandbox.faults import FaultInjector
from rutter_pipeline.sandbox.query import ENDPOINTS, BadRequest, parse_list_query
from rutter_pipeline.sandbox.state import Sandbox, SandboxError
from rutter_pipeline.sandbox.timefmt import day_number, iso_ms

CREATE_OPTIONS = {
    "platform",
    "orders_per_day",
    "history_days",
    "ready",
    "initial_sync_minutes",
    "batches",
    "batch_minutes",
    "seed",
}
MAX_BULK = 100_000  # connections one create request may make (``count``)


def _json(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status, media_type="application/json")


class ControlApi:
    def __init__(self, sandbox: Sandbox, faults: FaultInjector) -> None:
        self.sb = sandbox
        self.faults = faults

    def routes(self) -> list[Route]:
        table = [
            ("/health", "GET", self.health),
            ("/connections", "GET", self.list_connections),
            ("/connections", "POST", self.create_connection),
            ("/connections/{connection_id}/actions/{action}", "POST", self.action),
            ("/clock", "GET", self.clock),
            ("/clock/advance", "POST", self.advance),
            ("/faults", "GET", self.get_faults),
            ("/faults", "POST", self.set_faults),
            ("/faults", "DELETE", self.clear_faults),
            ("/mutations", "GET", self.list_mutations),
            ("/mutations", "POST", self.mutate),
            ("/mutations", "DELETE", self.clear_mutations),
            ("/ground_truth", "GET", self.ground_truth),
            ("/stats", "GET", self.stats),
            ("/webhooks", "GET", self.webhook_log),
            ("/webhooks/config", "POST", self.webhook_config),
            ("/webhooks/wait", "POST", self.webhook_wait),
        ]
        return [Route(f"/_sandbox{path}", self._wrap(fn), methods=[method]) for path, method, fn in table]

    @staticmethod
    def _wrap(fn):
        async def endpoint(request: Request) -> Response:
            try:
                body = orjson.loads(await request.body() or b"{}") if request.method == "POST" else {}
                if not isinstance(body, dict):
                    raise SandboxError("the request body must be a JSON object")
                result = fn(request, body)
                if asyncio.iscoroutine(result):
                    result = await result
                return _json(result)
            except SandboxError as exc:
                status = 404 if str(exc).startswith("unknown connection") else 400
                return _json({"error": str(exc)}, status)
            except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
                return _json({"error": f"{type(exc).__name__}: {exc}"}, 400)

        return endpoint

    def _now(self) -> dict:
        return {"now": iso_ms(self.sb.now_ms), "now_ms": self.sb.now_ms}

    def health(self, request: Request, body: dict) -> dict:
        return {"ok": True, **self._now()}

    def list_connections(self, request: Request, body: dict) -> list[dict]:
        return [c.control_summary(self.sb.now_ms) for c in self.sb.connections.values()]

    def create_connection(self, request: Request, body: dict) -> dict | list[dict]:
        """One connection (its summary), or with ``count`` that many alike in one request (a list).

        Creating a connection generates none of its data (days are made when first read), so a
        thousand take one request and a fraction of a second. ``seed`` with ``count`` is a base: the
        connections get ``seed``, ``seed + 1``, ... so that their data differ.
        """
        body = dict(body)
        count = body.pop("count", None)
        unknown = set(body) - CREATE_OPTIONS
        if unknown:
            raise SandboxError(f"unknown options {sorted(unknown)}; known: {sorted(CREATE_OPTIONS | {'count'})}")
        if count is None:
            return self.sb.create_connection(**body).control_summary(self.sb.now_ms)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_BULK:
            raise SandboxError(f"count must be an integer from 1 to {MAX_BULK}")
        seed = body.pop("seed", None)
        made = []
        for i in range(count):
            one_seed = None if seed is None else (seed + i if isinstance(seed, int) else f"{seed}:{i}")
            made.append(self.sb.create_connection(**body, seed=one_seed).control_summary(self.sb.now_ms))
        return made

    def action(self, request: Request, body: dict) -> dict:
        conn = self.sb.action(request.path_params["connection_id"], request.path_params["action"])
        return conn.control_summary(self.sb.now_ms)

    def clock(self, request: Request, body: dict) -> dict:
        return self._now()

    def advance(self, request: Request, body: dict) -> dict:
        minutes = body.get("minutes")
        if not isinstance(minutes, int | float):
            raise SandboxError("advance needs {'minutes': <number>}")
        self.sb.advance(float(minutes))
        return self._now()

    def get_faults(self, request: Request, body: dict) -> dict:
        return {"settings": self.faults.settings.as_dict(), "injected": dict(self.faults.counts)}

    def set_faults(self, request: Request, body: dict) -> dict:
        self.faults.set(body)
        return self.get_faults(request, {})

    def clear_faults(self, request: Request, body: dict) -> dict:
        self.faults.clear()
        return self.get_faults(request, {})

    def mutate(self, request: Request, body: dict) -> dict:
        conn = self.sb.connection(str(body.get("connection_id")))
        entity = body.get("entity")
        if entity not in ENDPOINTS:
            raise SandboxError(f"entity must be one of {', '.join(ENDPOINTS)}")
        day = day_number(date.fromisoformat(str(body.get("day"))))
        return self.sb.mutations.add(
            conn.id,
            entity,
            day,
            str(body.get("kind")),
            body.get("field"),
            body.get("count"),
            conn.merchant.day(entity, day).keys,
            body.get("value"),
            int(body.get("index") or 0),
        )

    def list_mutations(self, request: Request, body: dict) -> list[dict]:
        return self.sb.mutations.listing()

    def clear_mutations(self, request: Request, body: dict) -> dict:
        self.sb.mutations.clear(request.query_params.get("connection_id"))
        return {"cleared": True}

    def ground_truth(self, request: Request, body: dict) -> list[dict]:
        params = dict(request.query_params)
        entity = params.pop("entity", None)
        if entity not in ENDPOINTS:
            raise SandboxError(f"entity must be one of {', '.join(ENDPOINTS)}")
        conn = self.sb.connection(str(params.pop("connection_id", None)))
        if "cursor" in params or "limit" in params:
            raise SandboxError("ground truth is unpaged: no cursor or limit")
        try:
            q = parse_list_query(ENDPOINTS[entity], params, conn.id)
        except BadRequest as exc:
            raise SandboxError(str(exc)) from None
        return self.sb.ground_truth(conn, q)

    def stats(self, request: Request, body: dict) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        by_endpoint: dict[str, dict[str, int]] = {}
        for (template, status), n in sorted(self.sb.request_stats.items()):
            by_endpoint.setdefault(template, {})[str(status)] = n
        return {
            "requests": by_endpoint,
            "requests_total": sum(self.sb.request_stats.values()),
            "faults_injected": dict(self.faults.counts),
            "webhooks": self.sb.webhooks.counts(),
            "cache": {
                "entries": len(self.sb.cache),
                "records": self.sb.cache.weight,
                "hits": self.sb.cache.hits,
                "misses": self.sb.cache.misses,
            },
            "prewarm": self.sb.prewarmer.summary() if self.sb.prewarmer else {"enabled": False},
            "read_ahead": self.sb.read_ahead.summary() if self.sb.read_ahead else {"enabled": False},
            "lazily_generated_records": self.sb.backlog.records,
            "process": {
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            },
            **self._now(),
        }

    def webhook_log(self, request: Request, body: dict) -> list[dict]:
        return self.sb.webhooks.log_entries()

    def webhook_config(self, request: Request, body: dict) -> dict:
        self.sb.webhooks.configure(**body)
        w = self.sb.webhooks
        return {
            "url": w.url,
            "retry_base": w.retry_base,
            "max_retries": w.max_retries,
            "duplicate": w.duplicate,
            "shuffle": w.shuffle,
            "timeout": w.timeout,
        }

    async def webhook_wait(self, request: Request, body: dict) -> dict:
        timeout = float(body.get("timeout", 10))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sb.webhooks.pending() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        pending = self.sb.webhooks.pending()
        return {"drained": pending == 0, "pending": pending}
