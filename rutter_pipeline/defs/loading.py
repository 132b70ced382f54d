"""The Settings the code location is being built with.

``rutter_pipeline.definitions`` reads the environment once (``Settings.from_env``) and loads this
folder under it; each module's ``@dg.definitions`` function asks here for the values its definitions
are built from (partitions, backfill policy, crons, sensor intervals, the executor, the resources),
so that no module of the folder reads the environment itself.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rutter_pipeline.settings import Settings

_current: ContextVar[Settings | None] = ContextVar("rutter_pipeline_settings", default=None)


@contextmanager
def loading_with(settings: Settings) -> Iterator[Settings]:
    """Make ``settings`` the ones :func:`current_settings` returns while the folder loads."""
    token = _current.set(settings)
    try:
        yield settings
    finally:
        _current.reset(token)


def current_settings() -> Settings:
    settings = _current.get()
    if settings is None:
        raise RuntimeError(
            "rutter_pipeline.defs is loaded by rutter_pipeline.definitions (build_definitions), which reads "
            "the settings once: load that module (dagster dev -m rutter_pipeline.definitions, dg check defs)"
        )
    return settings
