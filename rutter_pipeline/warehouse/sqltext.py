"""Tiny helpers to write SQL text from trusted names (the entity table) safely and readably.

The warehouse generates its DDL and merge statements from ``entities.py``. Those names are code
constants, but a typo there must not turn into broken or injectable SQL, so every identifier goes
through :func:`ident` (which accepts plain lower-case identifiers only and leaves them unquoted, so
the generated migrations stay readable) and every literal through psycopg's own quoting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from psycopg import sql

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def ident(name: str) -> str:
    """Return ``name`` as an unquoted identifier, refusing anything that would need quoting."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r} (use lower-case letters, digits, _)")
    return name


def qualified(schema: str, table: str) -> str:
    return f"{ident(schema)}.{ident(table)}"


def lit(value: str) -> str:
    """A SQL string literal for ``value`` (psycopg's quoting, no connection needed)."""
    return sql.Literal(value).as_string()


def path_lit(path: Iterable[str]) -> str:
    """A ``text[]`` literal for a JSONB path, e.g. ``'{customer,id}'``."""
    parts = list(path)
    for part in parts:
        ident(part)  # JSON keys used as paths are field names: keep them plain
    return lit("{" + ",".join(parts) + "}")


def columns_list(names: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{ident(n)}" for n in names)
