"""Keep secrets out of the receiver's logs.

Our own loggers and uvicorn's error logger get the project's redacting filter. uvicorn's access
logger cannot: its formatter unpacks the record's five arguments (client, method, path, version,
status), which the redacting filter folds into the message. It gets a filter of its own that
keeps the arguments and drops the query string, so a request line shows the path only, whatever
a caller puts after the ``?``.
"""

from __future__ import annotations

import logging

from rutter_pipeline.rutter.redact import install_log_redaction

ACCESS_LOGGER = "uvicorn.access"
REDACTED_LOGGERS = ("uvicorn", "uvicorn.error", "rutter_pipeline.webhooks", "rutter_pipeline.warehouse")


class PathOnlyAccessLog(logging.Filter):
    """Rewrites uvicorn's access-log arguments so the request line carries no query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


_ACCESS_FILTER = PathOnlyAccessLog()


def install_receiver_log_filters() -> None:
    """Attach the filters (idempotent)."""
    install_log_redaction(REDACTED_LOGGERS)
    access = logging.getLogger(ACCESS_LOGGER)
    if _ACCESS_FILTER not in access.filters:
        access.addFilter(_ACCESS_FILTER)
