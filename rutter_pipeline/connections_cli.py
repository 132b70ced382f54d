"""``rutter-pipeline connections add|list|remove``: the registry and the ``connections`` partitions.

The registry (``rutter.connections``) holds the access token; the Dagster instance only learns the
connection id, as a dynamic partition key.
"""

from __future__ import annotations

import argparse
import sys

from rutter_pipeline.stack import prepare_stack_env
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline.warehouse.registry import ConnectionRegistry

PARTITIONS_NAME = "connections"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a connection and add its partition")
    add.add_argument("connection_id")
    add.add_argument("--access-token", required=True, help="the connection's Rutter access token")
    add.add_argument("--platform", default=None)
    sub.add_parser("list", help="list registered connections")
    rm = sub.add_parser("remove", help="mark a connection removed and delete its partition")
    rm.add_argument("connection_id")


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def run(args: argparse.Namespace) -> int:
    env = prepare_stack_env()
    migrate(env.warehouse_url)
    registry = ConnectionRegistry(env.warehouse_url)
    if args.action == "add":
        conn = registry.add(args.connection_id, args.access_token, platform=args.platform)
        with _instance() as instance:
            if args.connection_id not in instance.get_dynamic_partitions(PARTITIONS_NAME):
                instance.add_dynamic_partitions(PARTITIONS_NAME, [args.connection_id])
        print(f"added {conn.connection_id} ({conn.platform or 'platform unknown'}, {conn.state})")
        return 0
    if args.action == "list":
        for conn in registry.list():
            print(f"{conn.connection_id}\t{conn.platform or '-'}\t{conn.state}")
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
