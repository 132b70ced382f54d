"""Incremental-sync watermarks (docs/architecture.md §5.5): per connection and entity, the newest ``updated_at`` loaded.

The caller advances a watermark only after the upsert that loaded the records has committed, so a
crash between the two re-reads a little (the upsert is idempotent) and never skips anything.
"""

from __future__ import annotations

from datetime import datetime

from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.session import connect


def get_watermark(url: str, connection_id: str, entity: str) -> datetime | None:
    """The stored watermark, or None before the first incremental sync."""
    with connect(psycopg_url(url)) as conn:
        row = conn.execute(
            "SELECT watermark FROM rutter.sync_state WHERE connection_id = %s AND entity = %s",
            (connection_id, entity),
        ).fetchone()
    return row[0] if row else None


def set_watermark(url: str, connection_id: str, entity: str, watermark: datetime, *, force: bool = False) -> datetime:
    """Advance the watermark to ``watermark`` and return the stored value.

    It never moves backwards unless ``force`` is set (an operator re-reading a period): when two
    syncs finish out of order, the older one must not drag the watermark back.
    """
    if watermark.tzinfo is None:
        raise ValueError("watermark must be timezone-aware (UTC)")
    keep_newest = "EXCLUDED.watermark" if force else "GREATEST(rutter.sync_state.watermark, EXCLUDED.watermark)"
    with connect(psycopg_url(url)) as conn:
        row = conn.execute(
            f"""
            INSERT INTO rutter.sync_state (connection_id, entity, watermark) VALUES (%s, %s, %s)
            ON CONFLICT (connection_id, entity) DO UPDATE SET watermark = {keep_newest}, updated_at = now()
            RETURNING watermark
            """,
            (connection_id, entity, watermark),
        ).fetchone()
    assert row is not None  # an upsert with RETURNING returns the row it wrote
    return row[0]
