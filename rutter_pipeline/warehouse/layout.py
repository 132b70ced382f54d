"""Where each entity lives in the warehouse and how its rows are keyed (docs/architecture.md §4.4).

These rules turn an :class:`~rutter_pipeline.entities.EntitySpec` into table names, key columns
and indexes. The DDL generator, the loader and the read-back all use them, so a new entity in
``entities.py`` needs no warehouse code.
"""

from __future__ import annotations

from rutter_pipeline.entities import ENTITIES, ChildSpec, Column, EntitySpec
from rutter_pipeline.warehouse.sqltext import qualified

RUTTER_SCHEMA = "rutter"
LANDING_SCHEMA = "landing"
MARTS_SCHEMA = "marts"

# The column whose value orders versions of one record: an older one never overwrites a newer one.
VERSION_COLUMN = "updated_at"
# Surrogate key of a record whose id is null (customers): fields that do not change on update.
SURROGATE_FIELDS = ("platform_id", "email", "created_at")
# Prefix of a surrogate key, so that it can never equal a real Rutter id (those are UUIDs or
# platform ids, neither starts with "~").
SURROGATE_PREFIX = "~"

# Bookkeeping columns of every rutter.<entity> table, after the typed ones.
EXTRA = "extra"
PARTITION_DATE = "_partition_date"
LOADED_AT = "_loaded_at"
RUN_ID = "_run_id"
# md5 of the record as landed: "same updated_at and identical content" means unchanged, no write.
CONTENT_HASH = "_hash"
# Position of a child in its parent's array, so the record can be given back in Rutter's order.
POSITION = "_position"


def key_column(spec: EntitySpec) -> str:
    """The column that identifies a record within a connection: ``id``, or ``_key`` for null ids."""
    return "_key" if spec.nullable_id else "id"


def entity_table(spec: EntitySpec) -> str:
    return qualified(RUTTER_SCHEMA, spec.table)


def landing_table(spec: EntitySpec) -> str:
    return qualified(LANDING_SCHEMA, spec.table)


def child_table(child: ChildSpec) -> str:
    return qualified(RUTTER_SCHEMA, child.table)


def has_version(columns: tuple[Column, ...]) -> bool:
    return any(c.name == VERSION_COLUMN for c in columns)


def surrogate_fields(spec: EntitySpec) -> tuple[str, ...]:
    """The typed columns a null-id record's surrogate key is hashed from."""
    names = {c.name for c in spec.columns}
    fields = tuple(f for f in SURROGATE_FIELDS if f in names)
    if spec.nullable_id and not fields:
        raise ValueError(f"{spec.name}: nullable_id needs one of {SURROGATE_FIELDS} as a typed column")
    return fields


def reference_columns(columns: tuple[Column, ...]) -> list[str]:
    """Columns that point at another entity (``customer_id`` -> customers): users join on them.

    The rule is by name (``<singular>_id`` where ``<singular>s`` is an entity), so it holds for
    any entity added to ``entities.py`` and indexes ``orders.customer_id``,
    ``transactions.order_id`` and ``order_line_items.product_id``.
    """
    return [c.name for c in columns if c.name.endswith("_id") and c.name[: -len("_id")] + "s" in ENTITIES]
