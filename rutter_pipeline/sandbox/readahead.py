"""Read-ahead: finish, in the server's idle moments, the days that requests left half-generated.

Order-days are generated page by page (``records.LazyDay``), so a client paging through a cold day
would otherwise wait for each page's generation and then leave the sandbox idle while it parses
the page. A client that asked for the first page of a day nearly always asks for the next, so an
asyncio task in the server's own event loop generates the rest of the most recently touched day in
small chunks, yielding to the loop between chunks: a request arriving meanwhile waits for at most
one chunk, and the work is the same the request would have done itself (the records come from the
day's one generator, in order, so the data does not depend on who generated it).
"""

from __future__ import annotations

import asyncio

from rutter_pipeline.sandbox.records import Backlog

CHUNK = 64  # records per step: a couple of milliseconds for big orders


class ReadAhead:
    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog
        self.records_done = 0

    def step(self) -> bool:
        """Generate one chunk of the most recently touched unfinished day; False when there is none."""
        day = self.backlog.latest()
        if day is None:
            return False
        before = len(day.recs)
        day.ensure(before + CHUNK)
        self.records_done += len(day.recs) - before
        return True

    async def run(self) -> None:
        wake = asyncio.Event()
        self.backlog.wake = wake.set
        try:
            while True:
                if self.step():
                    await asyncio.sleep(0)  # let waiting requests in between chunks
                else:
                    wake.clear()
                    await wake.wait()
        finally:
            self.backlog.wake = None

    def summary(self) -> dict:
        return {"enabled": True, "records_done": self.records_done, "days_pending": len(self.backlog)}
