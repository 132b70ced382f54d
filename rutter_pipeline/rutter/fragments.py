"""Run several page streams on threads and hand their pages over through one bounded queue.

A day is fetched as several disjoint sub-windows at once (Rutter's own ingestion advice), but the
caller wants a single iterator and flat memory. Each fragment gets a thread; pages go through a
queue of at most ``max_queued`` pages, so a slow consumer makes the fetchers wait instead of piling
pages up. The first error in any fragment cancels the others (their retry sleeps and limiter waits
wake up at once) and is raised to the caller; closing the iterator early cancels them too.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rutter_pipeline.rutter.pages import Page

log = logging.getLogger("rutter_pipeline.rutter.fragments")

# A stream factory receives the shared cancel event and yields its pages.
StreamFactory = Callable[[threading.Event], Iterator[Page]]

_PUT_SLICE_S = 0.1


@dataclass(frozen=True)
class _Done:
    fragment: int
    error: BaseException | None = None


def _put(q: queue.Queue[Page | _Done], item: Page | _Done, cancel: threading.Event) -> bool:
    """Put into the bounded queue, giving up when the fetch is cancelled."""
    while not cancel.is_set():
        try:
            q.put(item, timeout=_PUT_SLICE_S)
            return True
        except queue.Full:
            continue
    return False


def merge_streams(factories: list[StreamFactory], *, max_queued: int, join_timeout_s: float = 30.0) -> Iterator[Page]:
    """Yield the pages of all streams as they arrive; raise the first error any of them hits."""
    q: queue.Queue[Page | _Done] = queue.Queue(maxsize=max_queued)
    cancel = threading.Event()

    def work(index: int, factory: StreamFactory) -> None:
        try:
            for page in factory(cancel):
                if not _put(q, page, cancel):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(q, _Done(index, exc), cancel)
            return
        _put(q, _Done(index), cancel)

    threads = [
        threading.Thread(target=work, args=(i, f), name=f"rutter-fragment-{i}", daemon=True)
        for i, f in enumerate(factories)
    ]
    for thread in threads:
        thread.start()
    remaining = len(threads)
    failure: BaseException | None = None
    try:
        while remaining:
            item = q.get()
            if isinstance(item, _Done):
                remaining -= 1
                if item.error is not None:
                    failure = item.error
                    break
                continue
            yield item
    finally:
        cancel.set()
        for thread in threads:
            thread.join(join_timeout_s)
            if thread.is_alive():
                log.warning("fragment thread %s still busy after cancel; leaving it to finish", thread.name)
    if failure is not None:
        raise failure
