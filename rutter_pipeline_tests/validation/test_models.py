"""The pandera models are generated from the entity table and do the real checking.

Two views: the schema each generated model carries (one field per typed column, with the column's
dtype, nullability and enum), and behaviour: every typed column of every entity and child table,
corrupted in one record of an otherwise valid batch, rejects exactly that record with that path.
"""

from __future__ import annotations

import copy

import pandas as pd
import pandera.pandas as pa
import pytest

from rutter_pipeline.entities import ENTITIES, ChildSpec, Column, EntitySpec
from rutter_pipeline.validation import child_model_for, model_for, validate_records
from rutter_pipeline_tests.validation.records import RecordFactory

EXPECTED_DTYPES = {
    "numeric": "float64",
    "text": "string[python]",
    "boolean": "boolean",
    "timestamptz": "datetime64[ns, UTC]",
}
WRONG_JSON = {"numeric": "12.50", "text": 12345, "boolean": "true", "timestamptz": 1_709_251_200_000}


def _tables() -> list[tuple[EntitySpec, ChildSpec | None]]:
    return [(spec, None) for spec in ENTITIES.values()] + [
        (spec, child) for spec in ENTITIES.values() for child in spec.children
    ]


@pytest.mark.parametrize(
    ("spec", "child"), _tables(), ids=lambda v: getattr(v, "table", None) or getattr(v, "name", "")
)
def test_a_model_exists_for_every_table_with_every_typed_column(spec: EntitySpec, child: ChildSpec | None):
    model = child_model_for(child) if child else model_for(spec)
    columns = child.columns if child else spec.columns
    expected_name = "".join(p.capitalize() for p in (child.table if child else spec.name).split("_")) + "Model"
    assert model.__name__ == expected_name
    assert issubclass(model, pa.DataFrameModel)
    schema = model.to_schema()
    assert list(schema.columns) == [c.name for c in columns]
    assert schema.strict is True
    for column in columns:
        field = schema.columns[column.name]
        assert str(field.dtype) == EXPECTED_DTYPES[column.pg_type], column.name
        assert field.nullable is column.nullable, column.name
        isin = [check for check in field.checks if check.name == "isin"]
        if column.enum is None:
            assert isin == [], f"{column.name} is an open string"
        else:
            assert len(isin) == 1 and set(isin[0].statistics["allowed_values"]) == set(column.enum)
        assert field.coerce is (column.pg_type == "timestamptz"), column.name


def test_models_are_cached_and_named_as_the_entity():
    orders = ENTITIES["orders"]
    assert model_for(orders) is model_for(orders)
    assert model_for(orders).__name__ == "OrdersModel"
    assert child_model_for(orders.children[0]).__name__ == "OrderLineItemsModel"
    assert model_for(ENTITIES["customers"]).__name__ == "CustomersModel"


def test_the_model_itself_rejects_enum_null_and_unparseable_timestamp_cells():
    """Straight to the model, no pre-pass: these rules live in pandera, with the row index."""
    model = model_for(ENTITIES["transactions"])
    frame = pd.DataFrame(
        {
            "id": pd.array(["t1", "t2", None], dtype="string"),
            "platform_id": pd.array([None, None, None], dtype="string"),
            "order_id": pd.array(["o1", None, "o3"], dtype="string"),
            "payment_method_type": pd.array(["card", "cheque", "cash"], dtype="string"),
            "status": pd.array(["success", "success", "pending"], dtype="string"),
            "type": pd.array(["sale", "refund", "payout"], dtype="string"),
            "amount": [10.0, None, 3.5],
            "fee": [None, None, None],
            "gateway": pd.array([None, "stripe", None], dtype="string"),
            "iso_currency_code": pd.array(["USD", "EUR", None], dtype="string"),
            "created_at": ["2024-03-01T10:00:00.000Z", "2024-03-01T25:00:00Z", "2024-03-02T00:00:00+02:00"],
            "updated_at": ["2024-03-01T10:00:00.000Z", "2024-03-01T10:00:00Z", "2024-03-02T00:00:00Z"],
        }
    )
    with pytest.raises(pa.errors.SchemaErrors) as caught:
        model.validate(frame, lazy=True)
    cases = caught.value.failure_cases
    found = {(row.column, row.check.split("(")[0], row.index) for row in cases.itertuples()}
    assert ("payment_method_type", "isin", 1) in found
    assert ("id", "not_nullable", 2) in found
    assert ("created_at", "coerce_dtype", 1) in found
    assert not any(column in {"order_id", "amount", "gateway", "updated_at"} for column, _, _ in found)


def _corruptions(column: Column) -> list[tuple[object, str]]:
    """(bad value, check it must fail) for one typed column."""
    bad: list[tuple[object, str]] = [(WRONG_JSON[column.pg_type], "json_type")]
    if not column.nullable:
        bad.append((None, "not_nullable"))
    if column.enum is not None:
        bad.append(("not-a-rutter-value", "isin"))
    if column.pg_type == "timestamptz":
        bad.append(("2024-02-30T10:00:00Z", "timestamp"))
    return bad


def _cases() -> list[tuple[str, str | None, Column, object, str]]:
    cases = []
    for spec, child in _tables():
        for column in child.columns if child else spec.columns:
            for value, check in _corruptions(column):
                cases.append((spec.name, child.field if child else None, column, value, check))
    return cases


@pytest.mark.parametrize(
    ("entity", "child_field", "column", "value", "check"),
    _cases(),
    ids=lambda v: v.name if isinstance(v, Column) else repr(v) if not isinstance(v, str) else v,
)
def test_every_typed_column_is_checked(entity, child_field, column: Column, value, check):
    spec = ENTITIES[entity]
    records = RecordFactory(seed=3).batch(entity, 12)
    if child_field:
        records = [r for r in records if len(r[child_field]) >= 2][:10]
    target = copy.deepcopy(records[4])
    holder = target[child_field][1] if child_field else target
    path = column.path
    for key in path[:-1]:  # e.g. orders.customer_id reads customer.id
        holder = holder[key]
    holder[path[-1]] = value
    records[4] = target

    report = validate_records(spec, records)

    field = ".".join(path) if not child_field else f"{child_field}[1].{'.'.join(path)}"
    assert [r.record for r in report.rejects] == [target]
    assert report.rejects[0].errors == [
        {"field": field, "check": check, "failure_case": value, "message": report.rejects[0].errors[0]["message"]}
    ]
    assert field in report.rejects[0].errors[0]["message"]
    assert len(report.valid) == len(records) - 1 and target not in report.valid
    assert report.schema_failures == []


def test_a_frame_that_does_not_fit_the_model_is_a_bug_not_a_reject():
    """Column-level failures (no row index) must never be dropped silently."""
    from rutter_pipeline.validation.extract import extract_columns, read_keys
    from rutter_pipeline.validation.validate import ModelMismatch, _model_issues

    spec = ENTITIES["customers"]
    rows = RecordFactory().batch("customers", 3)
    extracted = extract_columns(3, spec.columns, read_keys(rows, [c.name for c in spec.columns], []))
    frame = pd.DataFrame({d.name: d.array for d in extracted}).drop(columns=["email"])
    with pytest.raises(ModelMismatch, match="email"):
        _model_issues(model_for(spec), frame, rows, extracted)
