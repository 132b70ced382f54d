"""A page of records as the client hands it over, with the little it knows about how it came."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Page:
    """One API page of ``entity`` records (already checked against its window).

    ``fragment`` is the index of the sub-window the page came from (0 for a single stream) and
    ``number`` its position in that fragment's page sequence. ``skipped`` counts records the API
    returned but the caller did not ask for (only for entities filtered client-side, i.e.
    customers fetched by ``updated_at`` and assigned to days by ``created_at``).
    """

    entity: str
    records: list[dict[str, Any]]
    fragment: int = 0
    number: int = 0
    window: tuple[int | None, int | None] = (None, None)
    nbytes: int = 0
    elapsed_s: float = 0.0
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.records)
