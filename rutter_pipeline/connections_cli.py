"""``rutter-pipeline connections add|import|list|remove``: the registry and the ``connections`` partitions.

The registry (``rutter.connections``) holds the access token; the Dagster instance only learns the
connection id, as a dynamic partition key. ``import`` registers a whole onboarding file with one
registry transaction and one partitions call, instead of a process per connection.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.connections_file import ConnectionsFileError, read_connections_file
from rutter_pipeline.stack import prepare_stack_env
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline.warehouse.tokens import new_key, rotate_tokens

PARTITIONS_NAME = "connections"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a connection and add its partition")
    add.add_argument("connection_id")
    add.add_argument("--access-token", required=True, help="the connection's Rutter access token")
    add.add_argument("--platform", default=None)
    imp = sub.add_parser(
        "import",
        help="register every connection of a CSV or JSON-lines file (all or nothing)",
        description="Register the connections of FILE: CSV with the header connection_id,access_token,platform "
        "(platform optional) or JSON lines with those keys. Every row is validated first; one bad row and "
        "nothing is written.",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="validate and count what would change; write nothing")
    sub.add_parser("list", help="list registered connections")
    rm = sub.add_parser("remove", help="mark a connection removed and delete its partition")
    rm.add_argument("connection_id")
    sub.add_parser("new-key", help="print a new key for RUTTER_TOKEN_KEY (a Fernet key)")
    sub.add_parser(
        "rotate-key",
        help="re-encrypt every access token under the first key of RUTTER_TOKEN_KEY",
        description="Key rotation: set RUTTER_TOKEN_KEY=NEW,OLD (the new key first) everywhere, run this, then "
        "drop OLD. One transaction: a token that no key decrypts stops it and changes nothing.",
    )


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _add_partitions(instance, connection_ids: list[str]) -> None:
    """The connections' partition keys, and the pool their first runs will claim (``defs/pools.py``)."""
    from rutter_pipeline.defs.pools import ensure_pool

    if connection_ids:
        instance.add_dynamic_partitions(PARTITIONS_NAME, connection_ids)
    ensure_pool(instance)


def run(args: argparse.Namespace) -> int:
    if args.action == "import":
        return _import(args.file, dry_run=args.dry_run)
    if args.action == "new-key":
        print(new_key())
        return 0
    env = prepare_stack_env()
    migrate(env.warehouse_url)
    registry = ConnectionRegistry(env.warehouse_url)
    if args.action == "add":
        conn = registry.add(args.connection_id, args.access_token, platform=args.platform)
        with _instance() as instance:
            known = args.connection_id in instance.get_dynamic_partitions(PARTITIONS_NAME)
            _add_partitions(instance, [] if known else [args.connection_id])
        print(f"added {conn.connection_id} ({conn.platform or 'platform unknown'}, {conn.state})")
        return 0
    if args.action == "list":
        for conn in registry.list():
            print(f"{conn.connection_id}\t{conn.platform or '-'}\t{conn.state}")
        return 0
    if args.action == "rotate-key":
        count = rotate_tokens(env.warehouse_url, registry.cipher)
        print(f"re-encrypted {count} access tokens under the first key of RUTTER_TOKEN_KEY; the other keys may go")
        return 0
    if args.action == "remove":
        registry.remove(args.connection_id)
        with _instance() as instance:
            if args.connection_id in instance.get_dynamic_partitions(PARTITIONS_NAME):
                instance.delete_dynamic_partition(PARTITIONS_NAME, args.connection_id)
        print(f"removed {args.connection_id}")
        return 0
    print(f"unknown action {args.action}", file=sys.stderr)
    return 2


def _import(path: Path, dry_run: bool) -> int:
    # The file is read before the stack is touched: an invalid file writes nothing anywhere.
    try:
        rows = read_connections_file(path)
    except ConnectionsFileError as exc:
        print(f"{exc.source}: not imported, {len(exc.errors)} error(s); nothing was written", file=sys.stderr)
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 2
    env = prepare_stack_env()
    migrate(env.warehouse_url)
    result = ConnectionRegistry(env.warehouse_url).add_many(rows, dry_run=dry_run)
    # Every id of the file, not only the added ones: a removed connection lost its partition, and an
    # import whose partitions call failed after the registry commit is repaired by running it again.
    with _instance() as instance:
        known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
        new = [row.connection_id for row in rows if row.connection_id not in known]
        if not dry_run:
            _add_partitions(instance, new)
    summary = (
        f"{result.total} connections: {len(result.added)} added, {len(result.updated)} updated, "
        f"{len(result.unchanged)} unchanged"
    )
    if dry_run:
        print(f"dry run: would import {summary}; {len(new)} new partitions; nothing written")
    else:
        print(f"imported {summary}")
        print(f"added {len(new)} partitions to {PARTITIONS_NAME!r}")
    return 0
