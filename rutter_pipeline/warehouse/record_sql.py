"""SQL expressions that split a landed Rutter record (JSONB) into typed columns, ``extra`` and child rows.

Typed values are cast in SQL (``::numeric``, ``::timestamptz``...) so money stays exact and the
loader needs no per-entity Python. ``extra`` is the record minus what the typed columns and child
tables hold, with two rules that make the split reversible (read-back gives the record as received):

* a nested typed path (``customer.id``) is removed from inside its object, so the rest of the
  object (the customer's email, name...) stays in ``extra``;
* an optional key (``required=False``) whose value is JSON ``null`` stays in ``extra``, so that
  "present but null" and "absent" can be told apart; a child array is removed only when it is
  an array (a null or odd value stays in ``extra`` as it came).
"""

from __future__ import annotations

from collections.abc import Sequence

from rutter_pipeline.entities import ChildSpec, Column, EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.sqltext import lit, path_lit

_CASTS = {"text": "", "numeric": "::numeric", "timestamptz": "::timestamptz", "boolean": "::boolean"}
JSON_NULL = "'null'::jsonb"


def json_at(source: str, path: Sequence[str]) -> str:
    """The JSONB value at ``path`` (SQL NULL when a key is missing)."""
    if len(path) == 1:
        return f"({source} -> {lit(path[0])})"
    return f"({source} #> {path_lit(path)})"


def text_at(source: str, path: Sequence[str]) -> str:
    if len(path) == 1:
        return f"({source} ->> {lit(path[0])})"
    return f"({source} #>> {path_lit(path)})"


def typed_value(column: Column, source: str) -> str:
    return f"{text_at(source, column.path)}{_CASTS[column.pg_type]}"


def extra_value(columns: Sequence[Column], source: str, child_fields: Sequence[str] = ()) -> str:
    """``source`` without the keys that typed columns and child tables hold (see module docstring)."""
    static: list[str] = []
    conditional: list[str] = []
    for col in columns:
        if len(col.path) > 1:
            continue
        key = col.path[0]
        if col.required:
            static.append(key)
        else:
            conditional.append(f"CASE WHEN {json_at(source, col.path)} = {JSON_NULL} THEN NULL ELSE {lit(key)} END")
    conditional += [
        f"CASE WHEN jsonb_typeof({json_at(source, (name,))}) = 'array' THEN {lit(name)} END" for name in child_fields
    ]
    if conditional:
        keys = ", ".join([lit(k) for k in static] + conditional)
        expr = f"({source} - array_remove(ARRAY[{keys}]::text[], NULL))"
    elif static:
        expr = f"({source} - {lit('{' + ','.join(static) + '}')}::text[])"
    else:
        expr = source
    for col in columns:
        if len(col.path) == 1:
            continue
        removed = f"({expr} #- {path_lit(col.path)})"
        if col.required:
            expr = removed
        else:
            expr = f"(CASE WHEN {json_at(source, col.path)} = {JSON_NULL} THEN {expr} ELSE {removed} END)"
    return expr


def surrogate_key(spec: EntitySpec, source: str) -> str:
    """The id, or for a null id a hash of fields that do not change on update (layout.SURROGATE_FIELDS).

    Timestamps are hashed in a normal form (UTC, microseconds) so that the same instant written
    differently by Rutter still gives the same key.
    """
    parts = []
    for name in layout.surrogate_fields(spec):
        col = next(c for c in spec.columns if c.name == name)
        value = typed_value(col, source)
        if col.pg_type == "timestamptz":
            value = f"to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        parts.append(value)
    id_col = next(c for c in spec.columns if c.name == "id")
    surrogate = f"{lit(layout.SURROGATE_PREFIX)} || md5(jsonb_build_array({', '.join(parts)})::text)"
    return f"COALESCE({typed_value(id_col, source)}, {surrogate})"


def child_array(child: ChildSpec, source: str) -> str:
    """The child array of a parent record, or an empty array when it is missing or not an array."""
    value = json_at(source, (child.field,))
    return f"(CASE WHEN jsonb_typeof({value}) = 'array' THEN {value} ELSE '[]'::jsonb END)"
