"""``rutter.rejects``: the records validation refused, with their errors, replaced per partition."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import orjson

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.validation.jsonvalues import escape_nul
from rutter_pipeline.warehouse.chunks import days
from rutter_pipeline.warehouse.copy import NUL_ESCAPE
from rutter_pipeline.warehouse.session import transaction

# A reject: the day it belongs to (None when it cannot be told), the record, its errors.
Reject = tuple[date | None, dict[str, Any], list[dict[str, Any]]]


def reject_json(value: Any) -> str:
    """A rejected record (or its errors) as jsonb accepts it: NULs written as the text ``\\u0000``.

    A reject is often rejected *for* its NUL, and the rejects table must still take it, as received
    but for that one escape (its errors name the paths).
    """
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    if NUL_ESCAPE in text:
        text = orjson.dumps(escape_nul(value), option=orjson.OPT_NON_STR_KEYS)
    return text.decode()


def write_rejects(
    url: str,
    spec: EntitySpec,
    connection_id: str,
    rejects: Iterable[Reject],
    run_id: str,
    *,
    start: date | None = None,
    end: date | None = None,
) -> int:
    """Store ``(partition_date, record, errors)`` rows, replacing earlier rejects of those partitions.

    The partitions replaced are the dates that occur in ``rejects`` plus, when given, every day
    of ``[start, end]``: pass the range so that a re-run with no rejects clears the old ones.
    """
    rows = [(d, reject_json(record), reject_json(errors)) for d, record, errors in rejects]
    dates = {d for d, _, _ in rows if d is not None}
    if start is not None or end is not None:
        dates.update(days(start or end, end or start))  # type: ignore[arg-type]
    with transaction(url) as conn:
        conn.execute(
            "DELETE FROM rutter.rejects WHERE entity = %s AND connection_id = %s "
            "AND (partition_date = ANY(%s) OR (%s AND partition_date IS NULL))",
            (spec.name, connection_id, sorted(dates), any(d is None for d, _, _ in rows)),
        )
        with conn.cursor().copy(
            "COPY rutter.rejects (entity, connection_id, partition_date, record, errors, run_id) FROM STDIN"
        ) as copy:
            for d, record, errors in rows:
                copy.write_row((spec.name, connection_id, d, record, errors, run_id))
    return len(rows)
