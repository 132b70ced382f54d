"""The ``rutter-pipeline`` command (docs/architecture.md §4.2, a public contract).

This module only parses arguments; each sub-command's work lives with the component it drives
(``sandbox/cli.py``, ``warehouse/cli_db.py``, ``webhooks/cli.py``, ``devstack.py``), imported on demand so
that ``rutter-pipeline sandbox`` does not load Dagster.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# sub-command -> module that provides ``configure(parser)`` and ``run(args) -> int``
COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("rutter_pipeline.devstack", "start the whole stack and the Dagster UI (the README's main command)"),
    "demo": ("rutter_pipeline.demo", "run the stack headless on sandbox merchants and check the result"),
    "sandbox": ("rutter_pipeline.sandbox.cli", "run the local Rutter API simulator"),
    "webhooks": ("rutter_pipeline.webhooks.cli", "the webhook receiver (webhooks serve)"),
    "connections": ("rutter_pipeline.connections_cli", "the connection registry"),
    "db": ("rutter_pipeline.warehouse.cli_db", "warehouse schema (db migrate)"),
    "stop": ("rutter_pipeline.stop_cli", "stop a running `dev` and the embedded PostgreSQL"),
    "env": ("rutter_pipeline.env_cli", "print the shell exports that point dagster CLIs at the local stack"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rutter-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only import the module of the command being run (the help lists them all without importing).
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                parser.exit(2, f"rutter-pipeline {name}: not available in this build ({exc.name})\n")
            module.configure(sp)
            sp.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
