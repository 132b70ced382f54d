"""Errors the warehouse raises, each saying what went wrong and what to do about it."""

from __future__ import annotations

from datetime import date


class WarehouseError(Exception):
    """Base class of the warehouse's own errors."""


class RecordOutsidePartition(WarehouseError):
    """A landed record belongs to a day outside the partition range being landed.

    The extractor asked Rutter for records created in that range, so this means the window
    arithmetic or Rutter's filter is wrong: landing it would put the record in the wrong partition.
    """

    def __init__(self, entity: str, record_id: object, day: date, start: date, end: date) -> None:
        super().__init__(
            f"{entity} record {record_id!r} belongs to {day}, outside the partition range "
            f"{start}..{end} being landed; check the extraction window"
        )
        self.day = day


class MissingPartitionField(WarehouseError):
    """A record has no value in the field that decides its partition (nor in the fallback)."""


class PartitionNotLanded(WarehouseError):
    """A merge was asked for days that have no landing: merging would delete their rows."""


class LandingNotValidated(WarehouseError):
    """The latest landing of a partition failed validation, so it must not reach ``rutter.*``."""


class UnstorableRecord(WarehouseError):
    """A record holds a NUL character (U+0000), which PostgreSQL's text and jsonb cannot store."""

    def __init__(self, entity: str, record_id: object, paths: list[str]) -> None:
        super().__init__(
            f"{entity} record {record_id!r} holds a NUL character (U+0000) in {', '.join(paths[:5])}, which "
            "PostgreSQL cannot store; route such records to rutter.rejects"
        )
        self.paths = paths
