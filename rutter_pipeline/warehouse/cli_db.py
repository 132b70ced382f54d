"""``rutter-pipeline db migrate``: create or upgrade the warehouse schema (docs/architecture.md §4.2).

The URL is ``WAREHOUSE_URL``, or the ``rutter_warehouse`` database on the embedded server.
"""

from __future__ import annotations

import argparse

from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse.migrations import migrate


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    sub.add_parser("migrate", help="apply the migrations the warehouse does not have yet (idempotent)")


def run(args: argparse.Namespace) -> int:
    if args.db_command == "migrate":
        from rutter_pipeline.warehouse.embedded import warehouse_url

        applied = migrate(warehouse_url(Settings.from_env()))
        print(
            f"applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "warehouse schema is up to date"
        )
        return 0
    raise SystemExit(f"unknown db action {args.db_command!r}")
