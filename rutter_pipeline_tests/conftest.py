"""Shared fixtures: each real component the tests talk to has a module in ``fixtures/``."""

pytest_plugins = [
    "rutter_pipeline_tests.fixtures.postgres",
    "rutter_pipeline_tests.fixtures.sandbox",
    "rutter_pipeline_tests.fixtures.pipeline",
    "rutter_pipeline_tests.fixtures.daemon",
    "rutter_pipeline_tests.fixtures.cli",
]


import os  # noqa: E402

import pytest  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from rutter_pipeline.rutter.limiter import close_shared_limiters  # noqa: E402

# Access tokens are stored encrypted, and the test warehouses are not the embedded one of a state
# folder: one key for this test process and every process it starts (CLIs, daemons, run workers).
os.environ.setdefault("RUTTER_TOKEN_KEY", Fernet.generate_key().decode())

try:  # private to Dagster: the guard below goes quiet rather than break on a Dagster that moved it
    from dagster._core.storage.defs_state.base import _current_storage
except ImportError:  # pragma: no cover
    _current_storage = None


@pytest.fixture(autouse=True)
def _no_leaked_dagster_instance():
    """Fail the test that leaves a DagsterInstance entered, instead of a random later one.

    Entering a DagsterInstance (``with instance``, or a ``build_*_context`` that opens one) makes its
    defs-state storage the process's current one until it is exited. One never exited outlives its
    instance, and the next test on that worker that resolves definitions fails with "Attempted to
    resolve undefined DagsterInstance weakref", depending on when the garbage collector ran.
    """
    before = _current_storage.get() if _current_storage is not None else None
    yield
    if _current_storage is not None:
        after = _current_storage.get()
        assert after is before, "the test left a DagsterInstance entered (use build_*_context as a context manager)"


@pytest.fixture(autouse=True)
def _close_rate_limiters():
    """Each test's clients share the rate limit in that test's own warehouse database (the default):
    close the limiters after the test, so no pool or leak thread outlives the database it points at."""
    yield
    close_shared_limiters()
