"""One logical GET against Rutter: rate limit, HTTP, classify, parse, retry.

Everything that can leak a secret happens here, so the rules are strict: exceptions from
``requests`` are converted into ``RutterError``s *outside* their ``except`` blocks (so neither
``__cause__`` nor ``__context__`` keeps the original, whose message contains the URL and token),
``raise_for_status`` is never called, and all messages go through ``redact``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlencode

import orjson
import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryError

from rutter_pipeline.rutter.config import ClientConfig
from rutter_pipeline.rutter.errors import (
    NetworkError,
    ProtocolError,
    RateLimited,
    RetriesExhausted,
    RutterError,
    error_from_response,
)
from rutter_pipeline.rutter.limiter import RequestLimiter, shared_limiter
from rutter_pipeline.rutter.rate_buckets import resolve_backend
from rutter_pipeline.rutter.redact import install_log_redaction, redact, register_basic_auth, register_secret
from rutter_pipeline.rutter.retry import build_retrying
from rutter_pipeline.rutter.stats import ClientStats

log = logging.getLogger("rutter_pipeline.rutter.transport")

USER_AGENT = "rutter-pipeline/0.1 (+requests)"


class Transport:
    """Pooled HTTP session + shared rate limiter + retry policy for one org's credentials."""

    def __init__(self, config: ClientConfig, stats: ClientStats, limiter: RequestLimiter | None = None) -> None:
        install_log_redaction()
        register_basic_auth(config.client_id, config.client_secret)
        self.config = config
        self.stats = stats
        self.limiter = limiter or shared_limiter(
            config.base_url,
            config.client_id,
            config.max_requests_per_10s,
            config.limiter_period_s,
            backend=resolve_backend(config.rate_limit_url),
            bulk_share=config.bulk_share,
            connection_share=config.connection_share,
        )
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=config.pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.auth = (config.client_id, config.client_secret)
        self.session.headers.update(
            {"X-Rutter-Version": config.api_version, "Accept": "application/json", "User-Agent": USER_AGENT}
        )
        self._timeout = (config.connect_timeout_s, config.read_timeout_s)

    def close(self) -> None:
        self.session.close()

    def get_json(
        self, path: str, params: dict[str, Any], *, cancel: threading.Event | None = None, bulk: bool = False
    ) -> tuple[dict[str, Any], int, float]:
        """GET ``path`` with retries; return (parsed body, body bytes, seconds of the last attempt).

        ``bulk`` marks a range load's request: it counts against the limiter's bulk share too.

        Raises the typed ``RutterError`` of a non-retryable failure at once, ``RetriesExhausted``
        (chained to the last failure) when the retry budget runs out, and ``InterruptedError`` when
        ``cancel`` is set while waiting.
        """
        register_secret(params.get("access_token"))
        cancel = cancel or threading.Event()

        def sleep(seconds: float) -> None:
            if cancel.wait(seconds):
                raise InterruptedError("fetch cancelled")

        retrying = build_retrying(self.config, self.stats, sleep=sleep, what=f"GET {path}")
        started = time.monotonic()
        try:
            return retrying(self._attempt, path, params, cancel, bulk)
        except RetryError as exc:
            attempt = exc.last_attempt
        last = attempt.exception()
        assert isinstance(last, RutterError)
        raise RetriesExhausted(last, attempts=attempt.attempt_number, elapsed_s=time.monotonic() - started) from last

    def _attempt(
        self, path: str, params: dict[str, Any], cancel: threading.Event, bulk: bool
    ) -> tuple[dict[str, Any], int, float]:
        waited = self.limiter.acquire(cancel.is_set, connection=params.get("access_token"), bulk=bulk)
        self.stats.add(requests=1, limiter_wait_s=waited)
        url = self.config.base_url + path
        shown = redact(f"{url}?{urlencode(params)}")
        started = time.monotonic()
        error: RutterError | None = None
        try:
            response = self.session.get(url, params=params, timeout=self._timeout)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            error = ProtocolError(
                f"response body was cut off or undecodable ({type(exc).__name__})", retryable=True, url=shown
            )
        except requests.Timeout as exc:
            error = NetworkError(f"request timed out ({type(exc).__name__}, timeouts {self._timeout}s)", url=shown)
        except requests.RequestException as exc:
            error = NetworkError(f"request failed: {type(exc).__name__}: {redact(str(exc))}", url=shown)
        payload: dict[str, Any] = {}
        if error is None:
            error, payload = self._read(response, shown)
        if error is not None:
            self._count_failure(error)
            raise error
        elapsed = time.monotonic() - started
        size = len(response.content)
        log.debug("GET %s -> %d bytes in %.3fs", path, size, elapsed)
        return payload, size, elapsed

    def _read(self, response: requests.Response, display_url: str) -> tuple[RutterError | None, dict[str, Any]]:
        """Classify a response: (error, {}) or (None, parsed body)."""
        body = response.content
        self.stats.add(bytes_received=len(body))
        if not 200 <= response.status_code < 300:
            return error_from_response(response.status_code, body, response.headers, display_url), {}
        parse_error: str | None = None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            parse_error = str(exc)
        if parse_error is not None:
            return (
                ProtocolError(
                    f"response body of {len(body)} bytes is not valid JSON ({parse_error}); it was probably truncated",
                    retryable=True,
                    status=response.status_code,
                    request_id=response.headers.get("X-Rutter-Request-ID"),
                    url=display_url,
                ),
                {},
            )
        if not isinstance(payload, dict):
            return (
                ProtocolError(
                    f"response body is a JSON {type(payload).__name__}, not an object",
                    status=response.status_code,
                    url=display_url,
                ),
                {},
            )
        return None, payload

    def _count_failure(self, error: RutterError) -> None:
        self.stats.add_error(type(error).__name__)
        if isinstance(error, RateLimited):
            self.stats.add(throttled=1)
