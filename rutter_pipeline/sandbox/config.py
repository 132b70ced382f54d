"""Settings of a sandbox run: credentials, data shape, clock, webhooks, faults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime


@dataclass
class FaultSettings:
    """Failures the sandbox injects on its Rutter surface (never on ``/_sandbox/``).

    Rates are probabilities per request, drawn from a seeded generator so a run is reproducible.
    ``endpoints`` limits faults to paths starting with one of the given prefixes (e.g. ``["/orders"]``).
    """

    rate_429: float = 0.0
    retry_after_seconds: float | None = None  # sent with injected 429s when set (Rutter documents none)
    rate_5xx: float = 0.0  # split evenly between 500, 502 and 503
    delay_seconds: float = 0.0  # added to every response
    rate_truncate: float = 0.0  # status 200, JSON cut in the middle
    rate_drop: float = 0.0  # connection closed without a response
    burst_5xx: int = 0  # the next N requests fail with 5xx (counts down)
    rate_slow: float = 0.0  # a share of responses held back ``slow_seconds`` (beyond a client's read timeout)
    slow_seconds: float = 0.0
    cursor_failures: int = 0  # the next N requests that carry a ``cursor`` fail with 500: paging breaks mid-stream
    # Each list page's next_cursor points at its own last record, so that record opens the next page
    # again (what an offset-paging platform does when a record is inserted between two reads).
    repeat_boundary: bool = False
    # The simulated clock moves this far after each list page: records change between two pages
    # of one window (an order fulfilled while a sync pages through its day).
    advance_minutes_per_page: float = 0.0
    endpoints: list[str] | None = None
    seed: int = 0

    def update(self, values: dict) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(known)}")
        for key, value in values.items():
            setattr(self, key, value)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SandboxConfig:
    client_id: str = "demo"
    client_secret: str = field(default="demo-secret", repr=False)
    seed: int = 1
    connections: int = 0  # demo connections created ready at start (varied sizes/platforms)
    uniform: bool = False  # every start-up connection gets exactly ``orders_per_day`` (no demo mix, no big one)
    orders_per_day: int = 40  # typical size for demo connections (they vary around it; one big one)
    history_days: int = 30
    now: datetime | None = None  # UTC; None = real now at start
    webhook_url: str | None = None
    rate_limit_per_10s: int = 500
    webhook_retry_base_seconds: float = 1.0
    webhook_max_retries: int = 6
    webhook_duplicate: bool = False  # deliver every webhook twice (Rutter may)
    webhook_shuffle: bool = False  # deliver each batch of webhooks in random order
    webhook_timeout_seconds: float = 5.0
    sync_interval_minutes: int = 10  # continuous sync cadence for ready connections (simulated time)
    cache_records: int = 250_000  # weighted LRU budget for generated days (~3 KB of memory per unit)
    prewarm: bool = False  # generate history in the background while idle (the standalone server does)
    read_ahead: bool = True  # finish days that requests left half-generated while idle
    faults: FaultSettings = field(default_factory=FaultSettings)


def config_to_dict(config: SandboxConfig) -> dict:
    """A JSON-able form (for handing a config to a sandbox subprocess)."""
    out = asdict(config)
    out["now"] = config.now.isoformat() if config.now else None
    return out


def config_from_dict(data: dict) -> SandboxConfig:
    data = dict(data)
    faults = FaultSettings(**(data.pop("faults", None) or {}))
    now = data.pop("now", None)
    return SandboxConfig(**data, now=datetime.fromisoformat(now) if now else None, faults=faults)
