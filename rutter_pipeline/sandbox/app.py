"""Assemble the sandbox's ASGI application: the Rutter surface and the control API."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from rutter_pipeline.sandbox.api import RAW_SEND_KEY, RutterApi
from rutter_pipeline.sandbox.config import SandboxConfig
from rutter_pipeline.sandbox.control_api import ControlApi
from rutter_pipeline.sandbox.faults import FaultInjector
from rutter_pipeline.sandbox.prewarm import Prewarmer
from rutter_pipeline.sandbox.readahead import ReadAhead
from rutter_pipeline.sandbox.state import Sandbox


class _RawSend:
    """Remember the server's own ``send`` so a fault can drop the connection (see DropConnection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


def build_app(config: SandboxConfig) -> tuple[ASGIApp, Sandbox]:
    sandbox = Sandbox(config)
    faults = FaultInjector(config.faults)

    sandbox.prewarmer = Prewarmer(sandbox) if config.prewarm else None
    sandbox.read_ahead = ReadAhead(sandbox.backlog) if config.read_ahead else None

    @asynccontextmanager
    async def lifespan(app: Starlette):
        tasks = [asyncio.create_task(worker.run()) for worker in (sandbox.prewarmer, sandbox.read_ahead) if worker]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            sandbox.close()

    routes = RutterApi(sandbox, faults).routes() + ControlApi(sandbox, faults).routes()
    return _RawSend(Starlette(routes=routes, lifespan=lifespan)), sandbox
