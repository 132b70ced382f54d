"""``rutter-pipeline db migrate``: create or upgrade the warehouse schema (docs/architecture.md §4.2).

The URL is ``WAREHOUSE_URL``, or the ``rutter_warehouse`` database on the embedded server.
"""

from __future__ import annotations

import argparse
import os

from rutter_pipeline.warehouse.migrations import migrate


def warehouse_url() -> str:
    url = os.environ.get("WAREHOUSE_URL")
    if url:
        return url
    from rutter_pipeline.warehouse.embedded import default_urls

    return default_urls()[0]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    sub.add_parser("migrate", help="apply the migrations the warehouse does not have yet (idempotent)")


def run(args: argparse.Namespace) -> int:
    if args.db_command == "migrate":
        applied = migrate(warehouse_url())
        print(
            f"applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "warehouse schema is up to date"
        )
        return 0
    raise SystemExit(f"unknown db action {args.db_command!r}")
