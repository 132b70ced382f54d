"""Onboarding files for ``rutter-pipeline connections import``: CSV or JSON lines, validated as a whole.

A lender hands over hundreds of connections at once; a file with one bad row must not half-register
them, so every row is checked before anything is written and every problem is reported, each as
``line N: reason`` (1-based lines of the file, the CSV header is line 1). Messages name lines, columns
and keys, never a field's value: a value may be an access token (a swapped column, a token pasted
into the id). Any duplicate connection id is an error, identical rows included: a file that lists a
merchant twice was put together wrongly, and which of the two is meant is not ours to guess.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from rutter_pipeline.connections.registry import ConnectionRow

COLUMNS = ("connection_id", "access_token", "platform")
REQUIRED = ("connection_id", "access_token")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
# A connection id becomes a Dagster partition key and half of "<connection_id>|<day>": Dagster refuses
# these substrings in a key (INVALID_PARTITION_SUBSTRINGS), and "|" splits the multi-partition key.
# Checked here so that an id Dagster would refuse fails the file before the registry is written.
FORBIDDEN_IN_ID = ("|", "...")


class ConnectionsFileError(ValueError):
    """The file cannot be imported; ``errors`` holds every ``line N: reason``, none quoting a value."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))


def read_connections_file(path: str | Path) -> list[ConnectionRow]:
    """The rows of a CSV or JSON-lines file, or ``ConnectionsFileError`` listing every problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConnectionsFileError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    return parse_connections(data, file_format(path, data), source=str(path))


def file_format(path: Path, data: bytes) -> str:
    """'csv' or 'jsonl': by the file's extension, else by its first non-blank character."""
    by_extension = FORMATS.get(path.suffix.lower())
    if by_extension:
        return by_extension
    first = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "jsonl" if first in (b"{", b"[") else "csv"


def parse_connections(data: bytes, fmt: str, source: str = "<input>") -> list[ConnectionRow]:
    errors: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConnectionsFileError(source, [f"line {line}: not valid UTF-8"]) from None
    parse = {"csv": _csv_records, "jsonl": _jsonl_records}[fmt]
    rows: list[ConnectionRow] = []
    first_line: dict[str, int] = {}
    for line, record in parse(text, errors):
        # The parser may have reported this line already (an unknown key); its values are checked too.
        reported = bool(errors) and errors[-1].startswith(f"line {line}:")
        row = _row(line, record, errors)
        if row is None or reported:
            continue
        if row.connection_id in first_line:
            errors.append(f"line {line}: connection_id given again (first on line {first_line[row.connection_id]})")
            continue
        first_line[row.connection_id] = line
        rows.append(row)
    if not rows and not errors:
        errors.append("line 1: no connections in the file")
    if errors:
        raise ConnectionsFileError(source, errors)
    return rows


def _csv_records(text: str, errors: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    consumed = 0  # lines read so far; a quoted field may span lines, so a row starts after them
    header: list[str] | None = None
    try:
        for fields in reader:
            line, consumed = consumed + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line, or a spreadsheet's empty row (",,")
            if header is None:
                header = [f.strip() for f in fields]
                if not _valid_header(header, errors, line):
                    return
                continue
            if len(fields) != len(header):
                errors.append(f"line {line}: expected {len(header)} fields, found {len(fields)}")
                continue
            yield line, dict(zip(header, fields, strict=True))
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: malformed CSV ({exc})")


def _valid_header(header: list[str], errors: list[str], line: int) -> bool:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        # Not echoed: a file without a header has a data row here, token included.
        errors.append(
            f"line {line}: the header must be {','.join(COLUMNS)} (platform optional); missing {', '.join(missing)}"
        )
        return False
    unknown = [c for c in header if c not in COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    for name in unknown:
        errors.append(f"line {line}: unknown column {name!r}")
    for name in repeated:
        errors.append(f"line {line}: column {name!r} appears more than once")
    return not unknown and not repeated


def _jsonl_records(text: str, errors: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    if text.lstrip().startswith("["):
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        errors.append(f"line {line}: a JSON array; write one JSON object per line (JSON lines)")
        return
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends, which splitlines() breaks on.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # exc.msg says what was expected, never the text; the exception (which holds it) is dropped.
            errors.append(f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            errors.append(f"line {number}: expected a JSON object with {', '.join(COLUMNS)}")
            continue
        for key in record:
            if key not in COLUMNS:
                errors.append(f"line {number}: unknown key {key!r}")
        yield number, record


def _row(line: int, record: dict[str, Any], errors: list[str]) -> ConnectionRow | None:
    """The record as a row, or None after appending its problems to ``errors``."""
    found = len(errors)
    values: dict[str, str] = {}
    for name in COLUMNS:
        value = record.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            errors.append(f"line {line}: {name} must be a string, not {type(value).__name__}")
            continue
        values[name] = value.strip()
        if name in REQUIRED and not values[name]:
            errors.append(f"line {line}: {name} is {'empty' if name in record else 'missing'}")
    connection_id = values.get("connection_id", "")
    if any(s in connection_id for s in FORBIDDEN_IN_ID) or not connection_id.isprintable():
        errors.append(
            f"line {line}: connection_id must not contain {' or '.join(map(repr, FORBIDDEN_IN_ID))} "
            "or control characters"
        )
    token = values.get("access_token", "")
    if any(c.isspace() for c in token) or not token.isprintable():
        errors.append(f"line {line}: access_token contains whitespace or control characters")
    if len(errors) > found:
        return None
    return ConnectionRow(connection_id, values["access_token"], values["platform"] or None)
