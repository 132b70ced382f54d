"""Validation of Rutter records with pandera models generated from the entity table (docs/architecture.md §5.2).

No Dagster here: the landing asset calls ``validate_records`` on each page before anything is loaded,
lands ``report.valid``, writes ``report.rejects`` to ``rutter.rejects`` and turns ``report.passed``,
``report.metadata()`` and ``report.failure_cases()`` into its blocking schema check.
"""

from rutter_pipeline.validation.models import build_model, child_model_for, model_for
from rutter_pipeline.validation.report import DriftField, FieldStats, Reject, ValidationReport
from rutter_pipeline.validation.validate import ModelMismatch, validate_records

__all__ = [
    "DriftField",
    "FieldStats",
    "ModelMismatch",
    "Reject",
    "ValidationReport",
    "build_model",
    "child_model_for",
    "model_for",
    "validate_records",
]
