"""pandera ``DataFrameModel`` classes generated from the entity table, one per entity and per child table.

The models are built by one function from ``Column`` rows (docs/architecture.md §3: a new entity is a new row in
``entities.py``, not a new class), so their rules cannot drift from the warehouse types:

- ``numeric`` -> ``float64`` (JSON numbers; ``NaN`` is null),
- ``text`` -> pandas' ``string`` dtype,
- ``boolean`` -> pandas' nullable ``boolean``,
- ``timestamptz`` -> ``datetime64[ns, UTC]``, coerced by the model from the record's ISO 8601
  strings: the parse is the model's check, and each unparseable value is a failure case,
- ``nullable`` -> ``Field(nullable=...)``, ``enum`` -> ``Field(isin=...)`` (open strings get no check).

The frame handed to a model holds exactly its typed columns (``strict``) with the dtypes above; the
pre-pass in ``extract`` builds it and keeps values of the wrong JSON type out of it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.typing import Series

from rutter_pipeline.entities import ChildSpec, Column, EntitySpec, PgType

TEXT_DTYPE = pd.StringDtype("python")
BOOLEAN_DTYPE = pd.BooleanDtype()

# Rutter sends ISO 8601 strings ("2023-01-02T02:34:56.000Z"); offsets other than Z are converted to
# UTC. ``format="ISO8601"`` makes pandas reject every other layout instead of guessing one.
TIMESTAMP_KWARGS: dict[str, Any] = {
    "unit": "ns",
    "tz": "UTC",
    "to_datetime_kwargs": {"format": "ISO8601", "utc": True},
}


class TextDtype(pandas_engine.STRING):
    """pandas' ``string`` dtype, checked on the column's dtype alone.

    pandera's own check returns a per-element mask even when the dtype matches exactly, and then
    formats an (empty) failure-case frame for its message: about a millisecond per text column per
    page. The frame's text columns are built as ``string`` arrays (which only hold str or NA), so the
    dtype says everything.
    """

    def check(self, pandera_dtype: Any, data_container: Any = None) -> bool:
        try:
            resolved = pandas_engine.Engine.dtype(pandera_dtype)
        except TypeError:
            return False
        return resolved.type == self.type


_ANNOTATIONS: dict[PgType, Any] = {
    "numeric": Series[float],
    "text": Series[TextDtype],
    "boolean": Series[BOOLEAN_DTYPE],  # type: ignore[valid-type]  # pandera takes a dtype instance here
    "timestamptz": Series[pandas_engine.DateTime],
}


def _field(column: Column) -> Any:
    kwargs: dict[str, Any] = {"nullable": column.nullable}
    if column.enum is not None:
        kwargs["isin"] = list(column.enum)
    if column.pg_type == "text":
        kwargs["dtype_kwargs"] = {"storage": TEXT_DTYPE.storage}
    if column.pg_type == "timestamptz":
        kwargs["coerce"] = True
        kwargs["dtype_kwargs"] = TIMESTAMP_KWARGS
    return pa.Field(**kwargs)


def build_model(class_name: str, columns: tuple[Column, ...]) -> type[pa.DataFrameModel]:
    """A ``DataFrameModel`` subclass with one field per typed column (the single generic builder)."""
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"{class_name}: duplicate column names in {names}")

    class Config:
        strict = True  # the frame must carry exactly the typed columns: an extraction bug fails loudly
        coerce = False  # only timestamps are coerced (per field); other dtypes are checked as built
        name = class_name

    namespace: dict[str, Any] = {
        "__annotations__": {c.name: _ANNOTATIONS[c.pg_type] for c in columns},
        "__module__": __name__,
        "__doc__": f"Generated from the entity table: {', '.join(names)}.",
        "Config": Config,
    }
    namespace.update({c.name: _field(c) for c in columns})
    return type(class_name, (pa.DataFrameModel,), namespace)


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) + "Model"


@cache
def model_for(spec: EntitySpec) -> type[pa.DataFrameModel]:
    """The entity's model, e.g. ``OrdersModel``; built once per spec."""
    return build_model(_class_name(spec.name), spec.columns)


@cache
def child_model_for(child: ChildSpec) -> type[pa.DataFrameModel]:
    """A child table's model, e.g. ``OrderLineItemsModel``; built once per child spec."""
    return build_model(_class_name(child.table), child.columns)
