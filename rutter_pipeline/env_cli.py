"""``rutter-pipeline env``: shell exports so plain ``dagster`` commands use the project's instance.

    eval "$(rutter-pipeline env)"
    dagster asset materialize -m rutter_pipeline.definitions --select 'landing/orders,warehouse/orders' \\
        --partition '<connection_id>|<YYYY-MM-DD>'
"""

from __future__ import annotations

import argparse
import shlex

from rutter_pipeline.stack import prepare_stack_env


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__


def run(args: argparse.Namespace) -> int:
    for name, value in prepare_stack_env().as_env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0
