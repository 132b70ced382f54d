"""The code location (``dagster dev -m rutter_pipeline.definitions``, ``dg check defs``).

The environment is read here, once per process (``Settings.from_env``), and the ``defs/`` folder is
loaded under those settings the way ``dg`` projects load theirs: every module of the folder exposes
its objects (or a ``@dg.definitions`` function building them from the settings), nothing is listed
by hand. The folder is found from the package itself, not from ``pyproject.toml``, so an installed
(non-editable) package loads the same way as a checkout.
"""

import warnings
from pathlib import Path

import dagster as dg

import rutter_pipeline.defs
from rutter_pipeline.defs.loading import loading_with
from rutter_pipeline.settings import Settings

# BackfillPolicy and partitioned checks are marked beta/preview in 1.13; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# The directory holding the package: the checkout, or site-packages of an installed copy.
PROJECT_ROOT = Path(rutter_pipeline.defs.__file__).resolve().parent.parent.parent


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every asset, check, job, schedule, sensor and resource of ``defs/``, built from ``settings``."""
    with loading_with(settings):
        return dg.ComponentTree.from_module(defs_module=rutter_pipeline.defs, project_root=PROJECT_ROOT).build_defs()


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
