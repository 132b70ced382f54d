"""A real loopback HTTP server whose answers a test scripts, for contract violations the sandbox
does not produce (missing keys, repeated cursors, out-of-window records, cut-off bodies); it also
records POSTs, which makes it a webhook receiver.

It is deliberately dumb: each request is recorded and answered by ``server.handler(request)``,
so the test states exactly what the API did. The client under test talks to it over TCP like to
Rutter; nothing of the client is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float
    method: str = "GET"
    body: bytes = b""


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate_to: int | None = None  # announce the full length, send this many bytes, close
    drop: bool = False  # close the connection without answering
    delay_s: float = 0.0

    def raw(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


class ScriptedServer:
    def __init__(self) -> None:
        self.handler: Callable[[Seen], Reply] = lambda _seen: Reply(404, {"error_code": "NOT_SCRIPTED"})
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/versioned"

    def paths(self) -> list[str]:
        with self._lock:
            return [s.path for s in self.seen]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # webhook deliveries
                self.do_GET()

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    parts.path.removeprefix("/versioned"),
                    dict(parse_qsl(parts.query)),
                    dict(self.headers.items()),
                    time.monotonic(),
                    self.command,
                    self.rfile.read(length) if length else b"",
                )
                with server._lock:
                    server.seen.append(seen)
                reply = server.handler(seen)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    return
                body = reply.raw()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if reply.truncate_to is not None:
                    self.wfile.write(body[: reply.truncate_to])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    self.close_connection = True

        return Handler

    @contextmanager
    def running(self) -> Iterator[ScriptedServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
