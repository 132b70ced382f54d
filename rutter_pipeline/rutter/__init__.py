"""The Rutter API client: paging, windows, retries, rate limiting, typed errors, webhook signatures.

No Dagster here: assets, sensors and scripts all use the same ``RutterClient``.
"""

from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.rutter.config import ClientConfig
from rutter_pipeline.rutter.errors import (
    BadRequest,
    ConnectionDisabled,
    InvalidCredentials,
    NeedsUpdate,
    NetworkError,
    NotFound,
    ProductNotReady,
    ProtocolError,
    RateLimited,
    RetriesExhausted,
    RutterError,
    ServerError,
)
from rutter_pipeline.rutter.pages import Page
from rutter_pipeline.rutter.signatures import sign, verify
from rutter_pipeline.rutter.stats import ClientStats
from rutter_pipeline.rutter.windows import day_window_ms, split_window

__all__ = [
    "BadRequest",
    "ClientConfig",
    "ClientStats",
    "ConnectionDisabled",
    "InvalidCredentials",
    "NeedsUpdate",
    "NetworkError",
    "NotFound",
    "Page",
    "ProductNotReady",
    "ProtocolError",
    "RateLimited",
    "RetriesExhausted",
    "RutterClient",
    "RutterError",
    "ServerError",
    "day_window_ms",
    "sign",
    "split_window",
    "verify",
]
