"""A real loopback webhook receiver for the sandbox's webhook tests: records what arrives.

It answers 500 to the first ``fail_first`` deliveries so that retries can be observed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.status == 200]

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.accepted()
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"{len(self.accepted())} of {count} webhooks arrived")


@contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}/webhooks/rutter", fail_first=fail_first)

    async def hook(request: Request) -> Response:
        body = await request.body()
        with receiver.lock:
            status = 500 if len(receiver.received) < receiver.fail_first else 200
            receiver.received.append(Received(body, dict(request.headers), status))
        return Response(b"{}", status, media_type="application/json")

    app = Starlette(routes=[Route("/webhooks/rutter", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
