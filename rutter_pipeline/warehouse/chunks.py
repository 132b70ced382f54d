"""Runs of days: a partition range's days, and how a range merge cuts them into chunks."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from datetime import date, timedelta
from itertools import groupby
from operator import itemgetter


def days(start: date, end: date) -> list[date]:
    if end < start:
        raise ValueError(f"partition range ends ({end}) before it starts ({start})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def months(start: date, end: date) -> list[int]:
    return sorted({d.year * 12 + d.month - 1 for d in days(start, end)})


def month_end(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def chunks(days: list[date], per_day: dict[date, int], records: int, workers: int = 1) -> Iterator[tuple[date, date]]:
    """Consecutive runs of ``days`` of about equal record counts, about ``records`` at most each.

    The chunk count is rounded up to a multiple of ``workers`` so that the last round of a parallel
    merge does not leave a worker idle: a 62-day run of 170k orders merges as four chunks of 42k on
    two connections (two rounds) rather than 49k, 49k, 49k and 22k (the last alone on one core). A
    day is never split: a big day makes its chunk bigger; an empty day joins the chunk before it.
    """
    total = sum(per_day.get(d, 0) for d in days)
    count = max(1, math.ceil(total / records))
    if count > 1 and workers > 1:
        count = math.ceil(count / workers) * workers
    # Each day goes to the chunk in which the middle of its records falls.
    index: list[int] = []
    before = 0
    for day in days:
        n = per_day.get(day, 0)
        if n == 0 and index:
            index.append(index[-1])
        else:
            index.append(min(count - 1, int((before + n / 2) * count / total)) if total else 0)
        before += n
    for _, run in groupby(zip(days, index, strict=True), key=itemgetter(1)):
        run_days = [day for day, _ in run]
        yield run_days[0], run_days[-1]


def segments(days: list[date], held: Collection[date]) -> Iterator[list[date]]:
    """Runs of consecutive ``days`` within one calendar month, leaving out the ``held`` days."""
    run: list[date] = []
    for day in days:
        if day in held or (run and day.month != run[-1].month):
            if run:
                yield run
            run = []
        if day not in held:
            run.append(day)
    if run:
        yield run


def date_list(days: Sequence[date]) -> str:
    shown = ", ".join(str(d) for d in days[:5])
    return shown + (f" and {len(days) - 5} more" if len(days) > 5 else "")
