"""``run_receiver``: the receiver on a loopback port in a background thread (tests, ``dev``, ``demo``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

from rutter_pipeline.webhooks.app import WEBHOOK_PATH, create_app

START_TIMEOUT = 30.0


def uvicorn_config(app: Starlette, *, access_log: bool, log_level: str = "warning") -> uvicorn.Config:
    # The access log prints the request line without its query string (webhooks/logs.py).
    return uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on", timeout_keep_alive=30)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so the URL is known (port 0 picks one) before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


@contextmanager
def run_receiver(
    warehouse_url: str,
    client_secret: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = False,
    **app_options: int,
) -> Iterator[str]:
    """Serve the receiver until the ``with`` block ends; yields the URL Rutter should POST to.

    ``port=0`` picks a free port. ``app_options`` go to :func:`create_app` (``max_body_bytes``,
    ``pool_size``). The warehouse must be migrated already (``rutter-pipeline webhooks serve`` does it).
    """
    app = create_app(warehouse_url, client_secret, **app_options)
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn_config(app, access_log=access_log, log_level="info" if access_log else "warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the webhook receiver stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the webhook receiver did not start within {START_TIMEOUT} s")
            time.sleep(0.01)
        shown_host = f"[{host}]" if ":" in host else host
        yield f"http://{shown_host}:{sock.getsockname()[1]}{WEBHOOK_PATH}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
