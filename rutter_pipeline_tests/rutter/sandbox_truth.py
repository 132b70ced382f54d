"""What a fetch should have returned, from the sandbox's ground truth, and how to compare."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.rutter import Page
from rutter_pipeline.rutter.windows import iso_to_ms
from rutter_pipeline.sandbox import SandboxHandle


def expected_created(handle: SandboxHandle, spec: EntitySpec, connection_id: str, start: int, end: int) -> list[dict]:
    """Ground truth of the records created in ``[start, end]``.

    The sandbox cannot filter customers by ``created_at`` (Rutter cannot either), so for them the
    whole table is read and assigned to the window by ``created_at``, else ``updated_at``.
    """
    if spec.created_at_filter:
        return handle.control.ground_truth(spec.name, connection_id, created_at_min=start, created_at_max=end)
    kept = []
    for record in handle.control.ground_truth(spec.name, connection_id):
        stamp = record.get("created_at") or record.get("updated_at")
        if stamp and start <= iso_to_ms(stamp) <= end:
            kept.append(record)
    return kept


def records_of(pages: Any) -> list[dict]:
    return [record for page in pages for record in page.records]


def assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Every expected record exactly once, nothing else, byte-for-byte equal content."""
    counts = Counter(r["id"] for r in got)
    duplicates = [k for k, n in counts.items() if n > 1]
    assert not duplicates, f"records delivered more than once: {duplicates[:5]}"
    by_id = {r["id"]: r for r in got}
    want = {r["id"]: r for r in expected}
    missing, extra = want.keys() - by_id.keys(), by_id.keys() - want.keys()
    assert not missing and not extra, f"missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}"
    assert by_id == want


def page_sizes(pages: list[Page]) -> list[int]:
    return [len(p.records) for p in pages]
