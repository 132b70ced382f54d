"""Typed errors for everything the Rutter API (or the road to it) can do wrong.

Callers act on the type, not on a message: ``ProductNotReady`` means "not yet, come back after the
initial sync", ``NeedsUpdate`` means "the merchant must re-authenticate", ``RetriesExhausted`` means
"Rutter kept failing; the run should fail and be retried later". Rutter does not document which
HTTP status goes with which condition, so ``error_from_response`` trusts ``error_code`` first and
falls back on the status.

Every message and URL stored here has been through ``redact``: these exceptions end up in Dagster
event logs, Sentry and terminals, and must never carry an access token or the client secret.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

import orjson

from rutter_pipeline.rutter.redact import redact


class ErrorFields(TypedDict, total=False):
    """The keyword arguments of ``RutterError``, which its subclasses pass on."""

    status: int | None
    error_type: str | None
    error_code: str | None
    request_id: str | None
    url: str | None


class RutterError(Exception):
    """Base of all client errors; ``retryable`` tells the retry policy whether to try again."""

    retryable = False
    advice = "See the error code in Rutter's error reference."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        url: str | None = None,
    ) -> None:
        self.message = redact(message)
        self.status = status
        self.error_type = error_type
        self.error_code = error_code
        self.request_id = request_id
        self.url = redact(url) if url else None
        super().__init__(self._render())

    def _render(self) -> str:
        details = [f"status {self.status}" if self.status is not None else None, self.error_code]
        if self.request_id:
            details.append(f"X-Rutter-Request-ID {self.request_id}")
        if self.url:
            details.append(self.url)
        context = ", ".join(d for d in details if d)
        text = f"{self.message} ({context})" if context else self.message
        return f"{text}. {self.advice}" if self.advice else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidCredentials(RutterError):
    advice = (
        "Check RUTTER_CLIENT_ID / RUTTER_CLIENT_SECRET for this environment and that the connection's "
        "access token is current; retrying will not help."
    )


class ProductNotReady(RutterError):
    """The connection's initial sync has not finished: "not yet", never "no data"."""

    advice = (
        "The connection's initial sync is still running: retry after its INITIAL_UPDATE webhook "
        "(or pass force_fetch for orders/transactions to read possibly incomplete data)."
    )


class ConnectionDisabled(RutterError):
    advice = "Rutter disabled the connection; check GET /connections/status and the store before retrying."


class NeedsUpdate(RutterError):
    advice = "The merchant must re-authenticate through the connection's link_url; pause this connection."


class BadRequest(RutterError):
    advice = "The request was rejected as invalid; fix the parameters (this is a client bug, not transient)."


class NotFound(RutterError):
    advice = "The endpoint or id does not exist for this connection/platform; retrying will not help."


class RateLimited(RutterError):
    retryable = True
    advice = "Rutter's rate limit was hit; lower RUTTER_MAX_REQUESTS_PER_10S if this persists."

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Unpack[ErrorFields]) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(RutterError):
    retryable = True
    advice = "Rutter failed on its side; transient failures are retried, persistent ones need Rutter support."


class NetworkError(RutterError):
    """Timeout, refused or dropped connection: the request may not have reached Rutter."""

    retryable = True
    advice = "Check connectivity to RUTTER_BASE_URL; transient failures are retried."


class ProtocolError(RutterError):
    """A response that breaks the API's contract: its data cannot be trusted to be complete.

    Broken or truncated bodies are retryable (the next attempt may arrive whole); a structural
    violation (missing envelope or ``next_cursor``, a repeated cursor, a record outside its window)
    is not, because silently carrying on would lose or double records.
    """

    advice = "The response broke Rutter's contract; the fetch was stopped rather than risk missing records."

    def __init__(self, message: str, *, retryable: bool = False, **kwargs: Unpack[ErrorFields]) -> None:
        self.retryable = retryable
        super().__init__(message, **kwargs)


class RetriesExhausted(RutterError):
    """Every attempt failed; ``last`` is the final cause (also chained as ``__cause__``)."""

    advice = "Rutter kept failing; the run should fail now and be retried later."

    def __init__(self, last: RutterError, *, attempts: int, elapsed_s: float) -> None:
        self.last = last
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        super().__init__(
            f"gave up after {attempts} attempts in {elapsed_s:.1f}s; last error: {type(last).__name__}: {last.message}",
            status=last.status,
            error_type=last.error_type,
            error_code=last.error_code,
            request_id=last.request_id,
            url=last.url,
        )


_BY_CODE: dict[str, type[RutterError]] = {
    "INVALID_CREDENTIALS": InvalidCredentials,
    "PRODUCT_NOT_READY": ProductNotReady,
    "CONNECTION_DISABLED": ConnectionDisabled,
    "NEEDS_UPDATE": NeedsUpdate,
    "RATE_LIMIT_EXCEEDED": RateLimited,
    "RATE_LIMITED": RateLimited,
}

_BY_STATUS: dict[int, type[RutterError]] = {
    400: BadRequest,
    401: InvalidCredentials,
    404: NotFound,
    410: NotFound,
    429: RateLimited,
    450: BadRequest,  # the underlying platform answered 400
    452: RateLimited,  # the underlying platform's rate limit
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds; ``None`` when absent or unusable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: Rutter does not document one, so fall back to backoff
    return max(0.0, seconds)


def error_class(status: int, error_code: str | None) -> type[RutterError]:
    """The error type for a failed response: by ``error_code`` first, by HTTP status second."""
    if error_code and error_code.upper() in _BY_CODE:
        return _BY_CODE[error_code.upper()]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else RutterError


def error_from_response(
    status: int, body: bytes, headers: dict[str, str] | object, url: str, method: str = "GET"
) -> RutterError:
    """Build the typed error for a non-2xx response (``headers`` is any case-insensitive mapping)."""
    error_type = error_code = message = None
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        error_type = _str_or_none(payload.get("error_type"))
        error_code = _str_or_none(payload.get("error_code"))
        message = _str_or_none(payload.get("error_message"))
    get = getattr(headers, "get", lambda _k: None)
    cls = error_class(status, error_code)
    text = f"Rutter answered {status} to {method}: {message or 'no error message'}"
    fields: ErrorFields = {
        "status": status,
        "error_type": error_type,
        "error_code": error_code,
        "request_id": get("X-Rutter-Request-ID"),
        "url": url,
    }
    if cls is RateLimited:
        return RateLimited(text, retry_after=parse_retry_after(get("Retry-After")), **fields)
    return cls(text, **fields)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
