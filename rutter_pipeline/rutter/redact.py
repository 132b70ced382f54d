"""Keep access tokens and the client secret out of every message, log line and exception.

Rutter takes the per-connection ``access_token`` as a query parameter, so every URL we request
carries a secret. ``requests`` and ``urllib3`` put that URL into their exception messages and
urllib3's DEBUG log (``"GET /versioned/orders?access_token=... HTTP/1.1"``). Two defences work
together here:

* ``redact(text)`` masks the ``access_token`` query parameter, Basic ``Authorization`` values and
  every secret value the process has registered (tokens seen, client secrets and their Basic-auth
  encoding). Every message the client builds goes through it.
* ``install_log_redaction()`` puts a ``logging.Filter`` on the urllib3/requests loggers (and ours)
  that rewrites records through ``redact`` before any handler sees them. Logger filters apply only
  to records created on that exact logger, so each logger gets its own filter.

The registry of secret values is process-wide on purpose: logging is process-wide, and a token
registered by one client must also be masked in a log line emitted by another client's thread.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from urllib.parse import quote

MASK = "***"
_MIN_SECRET_LEN = 4
_TOKEN_PARAM = re.compile(r"(access_token=)[^&\s'\"#)>\]]+", re.IGNORECASE)
_TOKEN_FIELD = re.compile(r"""(["']access_token["']\s*:\s*["'])[^"']+""", re.IGNORECASE)
_BASIC = re.compile(r"(Basic\s+)[A-Za-z0-9+/=]{8,}")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_longest_first: tuple[str, ...] = ()  # the same values, longest first, so a secret that contains
# another is masked whole; rebuilt on registration, not on every message

LOGGER_NAMES = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    "rutter_pipeline.rutter",
    "rutter_pipeline.rutter.client",
    "rutter_pipeline.rutter.transport",
    "rutter_pipeline.rutter.fragments",
)


def register_secret(value: str | None) -> None:
    """Add a secret value (and its URL-quoted form) to the process-wide redaction set."""
    global _secrets, _longest_first
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    forms = {value, quote(value, safe="")}
    if forms <= _secrets:
        return
    with _lock:
        _secrets = _secrets | forms
        _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def register_basic_auth(client_id: str, client_secret: str) -> None:
    """Register a client secret together with the Basic ``Authorization`` value that carries it."""
    register_secret(client_secret)
    register_secret(base64.b64encode(f"{client_id}:{client_secret}".encode()).decode())


def redact(text: str) -> str:
    """``text`` with tokens, Basic credentials and every registered secret replaced by ``***``."""
    text = _TOKEN_PARAM.sub(r"\1" + MASK, text)
    text = _TOKEN_FIELD.sub(r"\1" + MASK, text)
    text = _BASIC.sub(r"\1" + MASK, text)
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message (and formatted traceback) through ``redact``.

    It never drops a record: losing a log line to hide a secret would hide the failure too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format must not break logging; mask what we have
            message = f"{record.msg!s} {record.args!r}"
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install_log_redaction(extra_loggers: tuple[str, ...] = ()) -> None:
    """Attach the redacting filter to the HTTP libraries' loggers and ours (idempotent)."""
    for name in (*LOGGER_NAMES, *extra_loggers):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
