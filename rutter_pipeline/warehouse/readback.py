"""Give back records as Rutter sent them, from the typed columns, ``extra`` and the child tables.

This is the inverse of ``record_sql``: it is how the tests prove that nothing was lost between
the landing and ``rutter.*``, and how an operator compares the warehouse with Rutter (or the
sandbox's ground truth) without keeping the raw landing around. Timestamps come back in Rutter's
format (``2023-01-02T02:34:56.000Z``), money as JSON numbers with the exact digits stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import psycopg

from rutter_pipeline.entities import ChildSpec, Column, EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.sqltext import ident, lit, path_lit

RUTTER_TIME_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


def _json_value(column: Column, alias: str) -> str:
    ref = f"{alias}.{ident(column.name)}"
    if column.pg_type == "timestamptz":
        return f"to_jsonb(to_char({ref} AT TIME ZONE 'UTC', '{RUTTER_TIME_FORMAT}'))"
    return f"to_jsonb({ref})"


def _object(columns: Sequence[Column], alias: str, children: Sequence[tuple[ChildSpec, str]] = ()) -> str:
    """SQL rebuilding one record (or child) from the row ``alias`` (see record_sql's split rules)."""
    expr = f"{alias}.{layout.EXTRA}"
    required = [c for c in columns if len(c.path) == 1 and c.required]
    if required:
        pairs = ", ".join(
            f"{lit(c.name if c.source is None else c.path[0])}, {_json_value(c, alias)}" for c in required
        )
        expr = f"({expr} || jsonb_build_object({pairs}))"
    for c in columns:
        ref = f"{alias}.{ident(c.name)}"
        if len(c.path) == 1 and not c.required:
            expr = (
                f"({expr} || CASE WHEN {ref} IS NULL THEN '{{}}'::jsonb "
                f"ELSE jsonb_build_object({lit(c.path[0])}, {_json_value(c, alias)}) END)"
            )
        elif len(c.path) > 1:
            parent = path_lit(c.path[:-1])
            condition = f"jsonb_typeof({expr} #> {parent}) = 'object'"
            if not c.required:
                condition += f" AND {ref} IS NOT NULL"
            value = f"COALESCE({_json_value(c, alias)}, 'null'::jsonb)"
            expr = f"(CASE WHEN {condition} THEN jsonb_set({expr}, {path_lit(c.path)}, {value}) ELSE {expr} END)"
    for child, rows in children:
        expr = (
            f"(CASE WHEN {alias}.{layout.EXTRA} ? {lit(child.field)} THEN {expr} "
            f"ELSE {expr} || jsonb_build_object({lit(child.field)}, COALESCE(({rows}), '[]'::jsonb)) END)"
        )
    return expr


def record_sql(spec: EntitySpec) -> str:
    """One query returning ``(record jsonb)`` per row of the connection, optionally per day range."""
    key = layout.key_column(spec)
    children = []
    for child in spec.children:
        rows = (
            f"SELECT jsonb_agg({_object(child.columns, 'c')} ORDER BY c.{layout.POSITION}) "
            f"FROM {layout.child_table(child)} c "
            f"WHERE c.connection_id = t.connection_id AND c.{ident(child.parent_key)} = t.{key}"
        )
        children.append((child, rows))
    return (
        f"SELECT {_object(spec.columns, 't', children)} FROM {layout.entity_table(spec)} t "
        "WHERE t.connection_id = %(connection_id)s "
        f"AND (%(start)s::date IS NULL OR t.{layout.PARTITION_DATE} >= %(start)s) "
        f"AND (%(end)s::date IS NULL OR t.{layout.PARTITION_DATE} <= %(end)s) "
        f"ORDER BY t.{key}"
    )


def read_records(
    url: str, spec: EntitySpec, connection_id: str, start: date | None = None, end: date | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the connection's records (of days ``[start, end]`` when given) as Rutter sent them."""
    with psycopg.connect(psycopg_url(url)) as conn, conn.cursor(name="readback") as cur:
        cur.execute(record_sql(spec), {"connection_id": connection_id, "start": start, "end": end})
        for (record,) in cur:
            yield record
