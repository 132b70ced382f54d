"""How a ``RutterClient`` is configured: the docs/architecture.md §4.1 settings plus transport knobs.

The settings (environment) decide what operators tune; the other fields (timeouts, retry budget,
backoff) have production defaults and exist so tests and benchmarks can shrink them instead of
waiting real seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from rutter_pipeline.settings import DEFAULT_API_VERSION, Settings

MAX_PAGE_LIMIT = 500


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs; the secret is kept out of ``repr``.

    ``max_requests_per_10s`` is the client-side limit shared by every client of the same org
    (``limiter_period_s`` shortens the window in tests). Retries stop after ``max_attempts``
    attempts or when the next wait would end more than ``max_retry_time_s`` after the first attempt,
    whichever comes first; a ``Retry-After`` header is honoured up to ``max_retry_after_s``.

    ``rate_limit_url`` says where that limit is shared (``rate_buckets``): a PostgreSQL or Redis URL
    shares it with every process and machine, ``None`` or ``"memory"`` keeps it in this process.
    ``from_settings`` fills it from ``RUTTER_RATE_LIMIT_URL``, else the warehouse URL. Range loads
    (``iter_created``) may use at most ``bulk_share`` of the limit, so incremental syncs and status
    calls always keep the rest; one connection at most ``connection_share``.
    """

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    api_version: str = DEFAULT_API_VERSION
    page_limit: int = MAX_PAGE_LIMIT
    window_fragments: int = 3
    max_requests_per_10s: int = 450
    limiter_period_s: float = 10.0
    rate_limit_url: str | None = field(default=None, repr=False)
    bulk_share: float = 1.0
    connection_share: float = 1.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 8
    max_retry_time_s: float = 300.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    queued_pages: int = 4
    pool_size: int = 16

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ValueError("Rutter credentials missing: set RUTTER_CLIENT_ID and RUTTER_CLIENT_SECRET")
        if not 1 <= self.page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be between 1 and {MAX_PAGE_LIMIT}, got {self.page_limit}")
        for name in ("window_fragments", "max_requests_per_10s", "max_attempts", "queued_pages", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("bulk_share", "connection_share"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ClientConfig:
        """Build from ``Settings``, then apply overrides."""
        values: dict[str, Any] = {
            "base_url": settings.base_url,
            "client_id": settings.client_id or "",
            "client_secret": settings.client_secret or "",
            "api_version": settings.api_version,
            "page_limit": settings.page_limit,
            "window_fragments": settings.window_fragments,
            "max_requests_per_10s": settings.max_requests_per_10s,
            # Every process of one org shares the limit: in the warehouse unless told otherwise.
            "rate_limit_url": settings.rate_limit_url or settings.warehouse_url,
            "bulk_share": settings.rate_limit_bulk_share,
            "connection_share": settings.rate_limit_connection_share,
        }
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown ClientConfig fields: {', '.join(sorted(unknown))}")
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> ClientConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
