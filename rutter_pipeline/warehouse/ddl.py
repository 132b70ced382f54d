"""Entity DDL generated from ``entities.py``, and the migration that brings a database up to it.

Entity tables are never written by hand: ``rutter.<entity>``, its child tables and
``landing.<entity>`` follow from the EntitySpec. Migrations, though, must be frozen files (an applied
migration is never edited), so this module *renders* SQL that is then committed as a new migration
file. The same diff tells the tests whether the migrated schema still matches the entity table:
after a change to ``entities.py`` the test fails until someone runs::

    python -m rutter_pipeline.warehouse.ddl --write add_something

which migrates a database (``--url``, default ``WAREHOUSE_URL``), compares it with the spec and
writes the missing tables, columns and indexes as the next numbered migration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from rutter_pipeline.entities import ENTITIES, ChildSpec, EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.sqltext import columns_list, ident, qualified

# information_schema / format_type spelling of the types used here
PG_TYPE_NAMES = {
    "text": "text",
    "numeric": "numeric",
    "timestamptz": "timestamp with time zone",
    "boolean": "boolean",
    "jsonb": "jsonb",
    "date": "date",
    "integer": "integer",
    "bigint": "bigint",
}


@dataclass(frozen=True)
class ColumnDef:
    name: str
    pg_type: str
    not_null: bool = False
    default: str | None = None
    # EXTERNAL: out of line but uncompressed. Landed records are written once and read once per
    # merge; pglz would cost more CPU than the disk it saves (the embedded server has no lz4).
    storage: str | None = None

    def sql(self) -> str:
        out = f"{ident(self.name)} {self.pg_type}"
        if self.not_null:
            out += " NOT NULL"
        if self.default:
            out += f" DEFAULT {self.default}"
        return out


@dataclass(frozen=True)
class TableDef:
    schema: str
    name: str
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    # UNLOGGED: no WAL for a working area that is rewritten on every run (see landing_table_def)
    unlogged: bool = False
    # storage parameters, ``WITH (...)``
    options: tuple[str, ...] = ()

    @property
    def qualified_name(self) -> str:
        return qualified(self.schema, self.name)

    def index_name(self, cols: tuple[str, ...]) -> str:
        name = "_".join((self.name, *(c.strip("_") for c in cols), "idx"))
        return ident(name[:63])

    def create_sql(self) -> list[str]:
        body = [c.sql() for c in self.columns]
        if self.primary_key:
            body.append(f"PRIMARY KEY ({columns_list(self.primary_key)})")
        lines = ",\n    ".join(body)
        kind = "UNLOGGED TABLE" if self.unlogged else "TABLE"
        options = f" WITH ({', '.join(self.options)})" if self.options else ""
        return (
            [f"CREATE {kind} {self.qualified_name} (\n    {lines}\n){options}"]
            + [self.storage_sql(c) for c in self.columns if c.storage]
            + [self.index_sql(cols) for cols in self.indexes]
        )

    def storage_sql(self, col: ColumnDef) -> str:
        return f"ALTER TABLE {self.qualified_name} ALTER COLUMN {ident(col.name)} SET STORAGE {col.storage}"

    def index_sql(self, cols: tuple[str, ...]) -> str:
        return f"CREATE INDEX {self.index_name(cols)} ON {self.qualified_name} ({columns_list(cols)})"


def _query_indexes(columns: Sequence[ColumnDef], references: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Indexes users query by: creation time, partition, and references to other entities."""
    names = set(_names(columns))
    out: list[tuple[str, ...]] = []
    if "created_at" in names:
        out.append(("connection_id", "created_at"))
    if layout.PARTITION_DATE in names:
        out.append(("connection_id", layout.PARTITION_DATE))
    out.extend(("connection_id", name) for name in references)
    return tuple(out)


def entity_table_def(spec: EntitySpec) -> TableDef:
    key = layout.key_column(spec)
    cols = [ColumnDef("connection_id", "text", True)]
    if spec.nullable_id:
        cols.append(ColumnDef(key, "text", True))
    cols += [ColumnDef(c.name, c.pg_type, c.name == key) for c in spec.columns]
    cols += [
        ColumnDef(layout.EXTRA, "jsonb", True),
        ColumnDef(layout.PARTITION_DATE, "date", True),
        ColumnDef(layout.LOADED_AT, "timestamptz", True, "now()"),
        ColumnDef(layout.RUN_ID, "text", True),
        ColumnDef(layout.CONTENT_HASH, "bigint", True),
    ]
    indexes = _query_indexes(cols, layout.reference_columns(spec.columns))
    return TableDef(layout.RUTTER_SCHEMA, spec.table, tuple(cols), ("connection_id", key), indexes=indexes)


def child_table_def(spec: EntitySpec, child: ChildSpec) -> TableDef:
    if child.parent_key in {c.name for c in child.columns}:
        raise ValueError(f"{child.table}: parent key {child.parent_key!r} clashes with a typed column")
    cols = [ColumnDef("connection_id", "text", True), ColumnDef(child.parent_key, "text", True)]
    cols += [ColumnDef(c.name, c.pg_type, c.name == "id") for c in child.columns]
    cols += [ColumnDef(layout.EXTRA, "jsonb", True), ColumnDef(layout.POSITION, "integer", True)]
    pk = ("connection_id", child.parent_key, "id")
    # No foreign key to the parent: the merge writes a parent and its children in one transaction
    # and deletes children before their parent; a key re-checked per child row cost ~13% of an
    # order merge (migration 0004). Children are read through their parent; only references to
    # other entities get an index.
    indexes = tuple(("connection_id", name) for name in layout.reference_columns(child.columns))
    return TableDef(layout.RUTTER_SCHEMA, child.table, tuple(cols), pk, indexes)


def landing_table_def(spec: EntitySpec) -> TableDef:
    """``landing.<entity>``: records as received, one row each, replaced per partition on every run.

    UNLOGGED because it is a working area rewritten on every run: a crash empties it (and
    ``landing.batches``, unlogged too), after which a merge refuses the partition as not landed
    and the run lands it again. Without WAL, landing is about twice as fast. Rows stay whole up to a
    page (``toast_tuple_target``): an order's JSON is written and read back in one piece, not as
    TOAST chunks (migration 0004).
    """
    cols = (
        ColumnDef("connection_id", "text", True),
        ColumnDef("partition_date", "date", True),
        ColumnDef("record", "jsonb", True, storage="EXTERNAL"),
        ColumnDef("run_id", "text", True),
        ColumnDef("landed_at", "timestamptz", True, "now()"),
    )
    return TableDef(
        layout.LANDING_SCHEMA,
        spec.table,
        cols,
        indexes=(("connection_id", "partition_date"),),
        unlogged=True,
        options=("toast_tuple_target = 8160",),
    )


def table_defs(specs: Iterable[EntitySpec] | None = None) -> list[TableDef]:
    """Every entity table in creation order (parents before their children)."""
    out: list[TableDef] = []
    for spec in specs if specs is not None else ENTITIES.values():
        out.append(entity_table_def(spec))
        out.extend(child_table_def(spec, child) for child in spec.children)
        out.append(landing_table_def(spec))
    return out


def _names(cols: Iterable[ColumnDef]) -> list[str]:
    return [c.name for c in cols]


@dataclass(frozen=True)
class Catalog:
    """What a database has: columns (with types) per table and index names."""

    columns: Mapping[str, Mapping[str, str]]
    indexes: frozenset[str]

    @classmethod
    def empty(cls) -> Catalog:
        return cls({}, frozenset())

    @classmethod
    def read(cls, conn: psycopg.Connection) -> Catalog:
        rows = conn.execute(
            """
            SELECT n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'u') AND a.attnum > 0 AND NOT a.attisdropped
            """,
            ([layout.RUTTER_SCHEMA, layout.LANDING_SCHEMA],),
        ).fetchall()
        columns: dict[str, dict[str, str]] = {}
        for table, column, pg_type in rows:
            columns.setdefault(table, {})[column] = pg_type
        indexes = conn.execute(
            "SELECT schemaname || '.' || indexname FROM pg_indexes WHERE schemaname = ANY(%s)",
            ([layout.RUTTER_SCHEMA, layout.LANDING_SCHEMA],),
        ).fetchall()
        return cls(columns, frozenset(i for (i,) in indexes))


@dataclass(frozen=True)
class SchemaDiff:
    statements: list[str]
    # differences a generated migration cannot fix safely (type changes, dropped columns)
    problems: list[str]

    def __bool__(self) -> bool:
        return bool(self.statements or self.problems)


def diff(catalog: Catalog, specs: Iterable[EntitySpec] | None = None) -> SchemaDiff:
    """The statements that bring ``catalog`` up to the entity table, and what they cannot fix."""
    statements: list[str] = []
    problems: list[str] = []
    for table in table_defs(specs):
        have = catalog.columns.get(table.qualified_name)
        if have is None:
            statements += table.create_sql()
            continue
        for col in table.columns:
            if col.name not in have:
                # Added columns are nullable: existing rows have no value until re-merged.
                statements.append(f"ALTER TABLE {table.qualified_name} ADD COLUMN {ident(col.name)} {col.pg_type}")
            elif have[col.name] != PG_TYPE_NAMES[col.pg_type]:
                problems.append(f"{table.qualified_name}.{col.name} is {have[col.name]}, the spec says {col.pg_type}")
        for cols in table.indexes:
            if f"{table.schema}.{table.index_name(cols)}" not in catalog.indexes:
                statements.append(table.index_sql(cols))
        wanted = set(_names(table.columns))
        problems += [f"{table.qualified_name}.{c} is not in the spec" for c in have if c not in wanted]
    return SchemaDiff(statements, problems)


def render_migration(statements: Sequence[str], depends: str | None, comment: str) -> str:
    head = [f"-- {line}".rstrip() for line in comment.splitlines()]
    if depends:
        head.append(f"-- depends: {depends}")
    return "\n".join(head) + "\n\n" + "".join(f"{s};\n\n" for s in statements).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from rutter_pipeline.warehouse.migrations import MIGRATIONS_DIR, migrate, migration_ids

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WAREHOUSE_URL"), help="database to compare")
    parser.add_argument("--from-scratch", action="store_true", help="compare with an empty database")
    parser.add_argument("--write", metavar="NAME", help="write migrations/NNNN_NAME.sql instead of printing")
    args = parser.parse_args(argv)
    if args.from_scratch:
        catalog = Catalog.empty()
    elif args.url:
        migrate(args.url)
        with psycopg.connect(args.url) as conn:
            catalog = Catalog.read(conn)
    else:
        parser.error("give --url (or set WAREHOUSE_URL), or --from-scratch")
    result = diff(catalog)
    for problem in result.problems:
        print(f"needs a hand-written migration: {problem}", file=sys.stderr)
    if not result.statements:
        print("the schema matches entities.py: nothing to generate", file=sys.stderr)
        return 1 if result.problems else 0
    ids = migration_ids()
    text = render_migration(
        result.statements,
        ids[-1] if ids else None,
        "Generated by `python -m rutter_pipeline.warehouse.ddl` from rutter_pipeline/entities.py.\n"
        "Never edit once applied: change entities.py and generate a new migration.",
    )
    if not args.write:
        sys.stdout.write(text)
        return 0
    path = MIGRATIONS_DIR / f"{len(ids) + 1:04d}_{ident(args.write)}.sql"
    Path(path).write_text(text)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
