"""The set-based statements that move landed records into ``rutter.<entity>`` and its child tables.

One statement per table and step, generated once per EntitySpec. The loader runs them in one
transaction against a temporary *stage* table holding one typed row per record key:

1. ``fill_from_*`` and ``dedup``: type the records of a source (the landing partition, or an
   incremental batch) and keep the newest version of each key;
2. ``upsert``: insert new keys, update changed ones unless older (``updated_at``) or identical
   (same content hash), remembering the written keys in a second temporary table;
3. ``count_stale``: how many of the records it skipped are older than the row stored;
4. ``delete_children`` / ``insert_children``: replace the child rows of the written parents;
5. ``delete_missing_children`` / ``delete_missing``: remove the partition's rows the source no
   longer has (full merges only; children first so that their count is known). A first load, whose
   range held no rows before the upsert (``range_has_rows``), has nothing to remove and skips them.

A first load has a shorter way: ``insert_landed`` and each child's ``insert_landed`` write the
landed records straight into the typed tables, with no stage (see merge_chunk.insert_landed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from rutter_pipeline.entities import ChildSpec, EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.ddl import entity_table_def
from rutter_pipeline.warehouse.record_sql import child_array, extra_value, surrogate_key, typed_value
from rutter_pipeline.warehouse.sqltext import columns_list, ident

# Named parameters every statement may use: entity, connection_id, run_id, start, end.

# A landed record is usually big enough to be stored compressed out of line (TOAST), and every
# ``->>`` on it would decompress it again: some twenty times per order. Concatenating with an
# empty object returns the record decompressed, and OFFSET 0 keeps the subquery from being
# flattened, so each record is decompressed once per merge.
DETOASTED = "('{}'::jsonb || record)"
# The landing rows of a merge's days.
LANDED_DAYS = "connection_id = %(connection_id)s AND partition_date BETWEEN %(start)s AND %(end)s"


@dataclass(frozen=True)
class ChildStatements:
    table: str
    delete_rewritten: str
    insert: str
    delete_missing: str
    insert_landed: str
    # ``insert`` keeping the first element of each child id (see stage.insert_children)
    insert_first_of_each_id: str
    # the child elements ``insert`` would write: inserted + duplicates left out
    count_elements: str


@dataclass(frozen=True)
class MergeStatements:
    key: str
    stage: str
    written: str
    create_stage: list[str]
    create_written: str
    fill_from_landing: str
    fill_from_incoming: str
    has_duplicates: str
    dedup: str
    range_has_rows: str
    count_stale: str
    upsert: str
    old_partitions: str
    children: tuple[ChildStatements, ...]
    delete_missing: str
    incoming: str
    create_incoming: str
    drop_stage: str
    stage_summary: str
    first_watermark: str | None
    insert_landed: str


def _child_field_column(child: ChildSpec) -> str:
    return ident(f"_c_{child.field}")


def _key_value(spec: EntitySpec, source: str) -> str:
    """The record key of ``source``: its id, or the surrogate key of an entity whose ids may be null."""
    if spec.nullable_id:
        return surrogate_key(spec, source)
    return typed_value(next(c for c in spec.columns if c.name == "id"), source)


@cache
def statements(spec: EntitySpec) -> MergeStatements:
    table = layout.entity_table(spec)
    key = layout.key_column(spec)
    stage = ident(f"_stage_{spec.table}")
    landing = layout.landing_table(spec)
    written = ident(f"_written_{spec.table}")
    incoming = ident(f"_incoming_{spec.table}")
    tdef = entity_table_def(spec)
    types = {c.name: c.pg_type for c in tdef.columns}
    typed = [c.name for c in spec.columns]
    stage_cols = ([key] if spec.nullable_id else []) + typed
    stage_cols += [layout.EXTRA, layout.PARTITION_DATE, layout.CONTENT_HASH]
    child_cols = [_child_field_column(ch) for ch in spec.children]
    stage_types = {**types, **dict.fromkeys(child_cols, "jsonb")}

    # The stage lives for one transaction: compressing its JSON, or moving a record's JSON out of line
    # once the row passes 2 kB (most orders do), would be wasted work, so rows stay whole up to a page.
    create_stage = [
        f"CREATE TEMP TABLE {stage} ("
        + ", ".join(f"{c} {stage_types[c]}" for c in stage_cols + child_cols)
        + ") WITH (toast_tuple_target = 8160) ON COMMIT DROP"
    ] + [f"ALTER TABLE {stage} ALTER COLUMN {c} SET STORAGE EXTERNAL" for c in [layout.EXTRA, *child_cols]]
    # One expression per stage column: the typed row of the record in ``src``.
    row_exprs = [f"{_key_value(spec, 'src.record')} AS {key}"] if spec.nullable_id else []
    row_exprs += [f"{typed_value(c, 'src.record')} AS {ident(c.name)}" for c in spec.columns]
    row_exprs += [
        f"{extra_value(spec.columns, 'src.record', [ch.field for ch in spec.children])} AS {layout.EXTRA}",
        f"src.partition_date AS {layout.PARTITION_DATE}",
        # jsonb's own 64-bit hash: no text rendering of the record (md5(record::text) is 3x slower)
        f"jsonb_hash_extended(src.record, 0) AS {layout.CONTENT_HASH}",
    ]
    select_exprs = row_exprs + [f"{child_array(ch, 'src.record')} AS {_child_field_column(ch)}" for ch in spec.children]
    newest = f"{layout.VERSION_COLUMN} DESC NULLS LAST, " if layout.has_version(spec.columns) else ""

    def fill(source: str, where: str) -> str:
        return (
            f"INSERT INTO {stage} SELECT "
            + ",\n  ".join(select_exprs)
            + f"\nFROM (SELECT partition_date, {DETOASTED} AS record FROM {source} WHERE {where} OFFSET 0) AS src"
        )

    # A record may come twice (overlapping windows, a page repeated by Rutter): keep the newest,
    # ties broken by content hash so that re-runs keep the same one. Sorting only the narrow
    # columns is much cheaper than a DISTINCT ON over whole records.
    dedup = (
        f"DELETE FROM {stage} s USING (SELECT ctid AS row_id, row_number() OVER "
        f"(PARTITION BY {key} ORDER BY {newest}{layout.CONTENT_HASH}) AS n FROM {stage}) d "
        "WHERE s.ctid = d.row_id AND d.n > 1"
    )
    # Duplicates are rare; hashing the keys to find out costs a fraction of the dedup's sort.
    has_duplicates = f"SELECT 1 FROM {stage} GROUP BY {key} HAVING count(*) > 1 LIMIT 1"

    if layout.has_version(spec.columns):
        v = layout.VERSION_COLUMN
        # Counted after the upsert, over the staged records it did not write (a first load has none):
        # the stored row of such a key is then committed, or this transaction's own. Before the upsert,
        # a first load's lookups met a table the planner took for empty, which it may probe through
        # any index led by connection_id; the (connection_id, customer_id) one then scanned every row
        # a concurrent chunk was inserting, once per staged record. MATERIALIZED keeps the lookup
        # after the anti-join rather than on every staged row.
        count_stale = (
            f"WITH unwritten AS MATERIALIZED (SELECT s.{key}, s.{v} FROM {stage} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {written} w WHERE w.key = s.{key})) "
            f"SELECT count(*) FROM unwritten s WHERE s.{v} < "
            f"(SELECT t.{v} FROM {table} t WHERE t.connection_id = %(connection_id)s AND t.{key} = s.{key})"
        )
        not_older = f" AND (t.{v} IS NULL OR EXCLUDED.{v} IS NULL OR EXCLUDED.{v} >= t.{v})"
        # The staged records and the newest version among them: the incremental sync's starting point
        # after a connection's first merge (see Loader.merge). Read from the stage, which is in
        # temporary buffers, rather than from the connection's rows in rutter.<entity> (a scan of
        # every merged row, ~2 s a year).
        stage_summary = f"SELECT count(*), max({v}) FROM {stage}"
        first_watermark = (
            "INSERT INTO rutter.sync_state (connection_id, entity, watermark) "
            "VALUES (%(connection_id)s, %(entity)s, %(watermark)s) ON CONFLICT (connection_id, entity) DO NOTHING"
        )
    else:
        count_stale = "SELECT 0"
        not_older = ""
        stage_summary = f"SELECT count(*), NULL::timestamptz FROM {stage}"
        first_watermark = None
    insert_cols = ["connection_id", *stage_cols, layout.LOADED_AT, layout.RUN_ID]
    # The first-load path: the stage's row expressions, straight into the table.
    version = layout.VERSION_COLUMN if layout.has_version(spec.columns) else "NULL::timestamptz"
    insert_landed = (
        f"WITH w AS (INSERT INTO {table} ({columns_list(insert_cols)})\n"
        f"SELECT %(connection_id)s, " + ",\n  ".join(row_exprs) + ", now(), %(run_id)s\n"
        f"FROM (SELECT partition_date, {DETOASTED} AS record FROM {landing} WHERE {LANDED_DAYS} OFFSET 0) AS src\n"
        f"RETURNING {version} AS version)\n"
        "SELECT count(*), max(version) FROM w"
    )
    updated = [c for c in insert_cols if c not in ("connection_id", key)]
    upsert = (
        f"WITH w AS (INSERT INTO {table} AS t ({columns_list(insert_cols)})\n"
        f"SELECT %(connection_id)s, {columns_list(stage_cols)}, now(), %(run_id)s FROM {stage}\n"
        f"ON CONFLICT (connection_id, {key}) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
        + f"\nWHERE t.{layout.CONTENT_HASH} <> EXCLUDED.{layout.CONTENT_HASH}{not_older}\n"
        f"RETURNING t.{key}, (t.xmax = 0), t.{layout.PARTITION_DATE})\n"
        f"INSERT INTO {written} SELECT * FROM w"
    )
    # Partition days a written row leaves (a customer dated by updated_at moves when updated).
    old_partitions = (
        f"SELECT t.{key}, t.{layout.PARTITION_DATE} FROM {stage} s JOIN {table} t "
        f"ON t.connection_id = %(connection_id)s AND t.{key} = s.{key} "
        f"WHERE t.{layout.PARTITION_DATE} <> s.{layout.PARTITION_DATE}"
    )
    # A row the landing does not have is gone from Rutter, unless it was written after the landing
    # began (an incremental sync between land and merge): a landing cannot speak for it.
    missing = (
        f"t.connection_id = %(connection_id)s AND t.{layout.PARTITION_DATE} BETWEEN %(start)s AND %(end)s "
        f"AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.{key} = t.{key}) "
        f"AND t.{layout.LOADED_AT} < (SELECT b.landed_at FROM landing.batches b WHERE b.entity = %(entity)s "
        f"AND b.connection_id = t.connection_id AND b.partition_date = t.{layout.PARTITION_DATE})"
    )
    children = tuple(_child_statements(spec, child, stage, written, missing, landing) for child in spec.children)
    return MergeStatements(
        key=key,
        stage=stage,
        written=written,
        create_stage=create_stage,
        create_written=f"CREATE TEMP TABLE {written} (key text, inserted boolean, day date) ON COMMIT DROP",
        fill_from_landing=fill(landing, LANDED_DAYS),
        fill_from_incoming=fill(incoming, "TRUE"),
        has_duplicates=has_duplicates,
        dedup=dedup,
        range_has_rows=(
            f"SELECT 1 FROM {table} t WHERE t.connection_id = %(connection_id)s "
            f"AND t.{layout.PARTITION_DATE} BETWEEN %(start)s AND %(end)s LIMIT 1"
        ),
        count_stale=count_stale,
        upsert=upsert,
        old_partitions=old_partitions,
        children=children,
        delete_missing=f"DELETE FROM {table} t WHERE {missing}",
        incoming=incoming,
        create_incoming=f"CREATE TEMP TABLE {incoming} (partition_date date, record jsonb) ON COMMIT DROP",
        drop_stage=f"DROP TABLE {stage}, {written}",
        stage_summary=stage_summary,
        first_watermark=first_watermark,
        insert_landed=insert_landed,
    )


def _child_statements(
    spec: EntitySpec, child: ChildSpec, stage: str, written: str, missing: str, landing: str
) -> ChildStatements:
    ctable = layout.child_table(child)
    parent = layout.entity_table(spec)
    key = layout.key_column(spec)
    pk = ident(child.parent_key)
    cols = ["connection_id", pk, *(c.name for c in child.columns), layout.EXTRA, layout.POSITION]
    exprs = [typed_value(c, "e.value") for c in child.columns]
    values = ", ".join(exprs) + f", {extra_value(child.columns, 'e.value')}, e.ordinality"
    elements = " WITH ORDINALITY AS e(value, ordinality)"
    source = (
        f"FROM {stage} s JOIN {written} w ON w.key = s.{key}\n"
        f"CROSS JOIN LATERAL jsonb_array_elements(s.{_child_field_column(child)}){elements}"
    )
    insert = f"INSERT INTO {ctable} ({columns_list(cols)})\nSELECT %(connection_id)s, s.{key}, {values}\n{source}"
    # Rutter has sent an order with two line items of one id: the child key (connection, parent, id)
    # takes one. The first in the array is kept (its position says which), the same on every re-run.
    child_id = typed_value(next(c for c in child.columns if c.name == "id"), "e.value")
    insert_first_of_each_id = (
        f"INSERT INTO {ctable} ({columns_list(cols)})\n"
        f"SELECT DISTINCT ON (s.{key}, {child_id}) %(connection_id)s, s.{key}, {values}\n{source}\n"
        f"ORDER BY s.{key}, {child_id}, e.ordinality"
    )
    # The first-load path reads two fields of each landed record, which costs less without
    # DETOASTED (landed records are stored whole, in line; see ddl.landing_table_def).
    insert_landed = (
        f"INSERT INTO {ctable} ({columns_list(cols)})\n"
        f"SELECT %(connection_id)s, {_key_value(spec, 'src.record')}, {values}\n"
        f"FROM (SELECT record FROM {landing} WHERE {LANDED_DAYS}) AS src\n"
        f"CROSS JOIN LATERAL jsonb_array_elements({child_array(child, 'src.record')}){elements}"
    )
    return ChildStatements(
        table=child.table,
        # ``= ANY(ARRAY(...))`` makes these index lookups of the few parents concerned, where a join
        # would scan every child row of the connection.
        delete_rewritten=(
            f"DELETE FROM {ctable} c WHERE c.connection_id = %(connection_id)s "
            f"AND c.{pk} = ANY(ARRAY(SELECT w.key FROM {written} w WHERE NOT w.inserted))"
        ),
        insert=insert,
        insert_first_of_each_id=insert_first_of_each_id,
        count_elements=f"SELECT count(*) {source}",
        delete_missing=(
            f"DELETE FROM {ctable} c WHERE c.connection_id = %(connection_id)s "
            f"AND c.{pk} = ANY(ARRAY(SELECT t.{key} FROM {parent} t WHERE {missing}))"
        ),
        insert_landed=insert_landed,
    )
