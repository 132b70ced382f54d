"""A faithful local simulator of Rutter's commerce API (2023-03-14), for tests, demos and benchmarks.

Rutter has no commerce sandbox, so everything in this project that talks to Rutter is exercised
against this one: realistic deterministic merchants, Rutter's auth, paging, errors and lifecycle,
signed webhooks, fault and schema-change injection, and a control API that tells the exact ground
truth. No Dagster here: it is a plain ASGI app (starlette + uvicorn).
"""

from rutter_pipeline.sandbox.config import FaultSettings, SandboxConfig
from rutter_pipeline.sandbox.control import SandboxControl, SandboxControlError
from rutter_pipeline.sandbox.server import SandboxHandle, run_sandbox

__all__ = ["FaultSettings", "SandboxConfig", "SandboxControl", "SandboxControlError", "SandboxHandle", "run_sandbox"]
