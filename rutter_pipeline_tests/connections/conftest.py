"""Fixtures of the connection tests: the warehouse tests' migrated database per test."""

from rutter_pipeline_tests.warehouse.conftest import warehouse

__all__ = ["warehouse"]
