"""Alerts for run failures and failed schema checks: Sentry when ``SENTRY_DSN`` is set, the log otherwise.

Rutter's guide asks for exactly this ("pipe validation errors into Sentry ... alert your developer
team immediately when Rutter's schema has changed"). No Dagster here; the run-failure sensor calls it.
Every text is passed through the client's redaction first, and Sentry is initialised without local
variables or PII, because a frame's locals can hold an access token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from rutter_pipeline.rutter.redact import redact

log = logging.getLogger("rutter_pipeline.alerts")
_SENTRY_DSN: str | None = None


def _sentry(dsn: str):
    import sentry_sdk

    global _SENTRY_DSN
    if dsn != _SENTRY_DSN:
        sentry_sdk.init(
            dsn=dsn,
            include_local_variables=False,
            send_default_pii=False,
            default_integrations=False,
            traces_sample_rate=0.0,
        )
        _SENTRY_DSN = dsn
    return sentry_sdk


def send_alert(title: str, detail: str, tags: Mapping[str, str], *, dsn: str | None) -> str:
    """Send one alert and return where it went ("sentry" or "log")."""
    title, detail = redact(title), redact(detail)
    safe_tags = {k: redact(str(v)) for k, v in tags.items()}
    if dsn:
        sentry_sdk = _sentry(dsn)
        with sentry_sdk.new_scope() as scope:
            for key, value in safe_tags.items():
                scope.set_tag(key, value)
            scope.set_extra("detail", detail)
            sentry_sdk.capture_message(title, level="error")
        sentry_sdk.flush(timeout=5)
        return "sentry"
    log.error("ALERT %s | %s | %s", title, " ".join(f"{k}={v}" for k, v in safe_tags.items()), detail)
    return "log"
