"""``RutterClient``: read Rutter's commerce endpoints completely, page by page.

The client's job is completeness under failure: follow ``next_cursor`` to its end, split windows
into fragments whose union is exactly the window, ride out rate limits and flaky responses, and
refuse to pass off a broken page stream (missing keys, repeated cursor, records outside the
window) as a finished one. It is a plain library object (no Dagster), safe to share between
threads; it keeps counters in ``stats`` so callers can report what a fetch cost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.rutter.config import ClientConfig
from rutter_pipeline.rutter.errors import ProtocolError
from rutter_pipeline.rutter.fragments import StreamFactory, merge_streams
from rutter_pipeline.rutter.limiter import RequestLimiter
from rutter_pipeline.rutter.pages import Page
from rutter_pipeline.rutter.stats import ClientStats
from rutter_pipeline.rutter.transport import Transport
from rutter_pipeline.rutter.windows import iso_to_ms, ms_to_iso, split_window
from rutter_pipeline.settings import Settings

log = logging.getLogger("rutter_pipeline.rutter.client")


class RutterClient:
    """Client for one Rutter org (client id/secret); connections are chosen per call by token.

    Build it from a ``ClientConfig``, from keyword fields of one (``RutterClient(base_url=...,
    client_id=..., client_secret=...)``) or from ``Settings`` (``RutterClient.from_settings(settings)``).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        stats: ClientStats | None = None,
        limiter: RequestLimiter | None = None,
        **fields: Any,
    ) -> None:
        if config is None:
            config = ClientConfig(**fields)
        elif fields:
            config = config.with_(**fields)
        self.config = config
        self.stats = stats or ClientStats()
        self._transport = Transport(config, self.stats, limiter)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RutterClient:
        return cls(ClientConfig.from_settings(settings, **overrides))

    def __repr__(self) -> str:
        return f"RutterClient({self.config.base_url!r}, client_id={self.config.client_id!r})"

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._transport.close()

    def __enter__(self) -> RutterClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- single requests ---------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any], key: str) -> Any:
        payload, _, _ = self._transport.get_json(path, params)
        if key not in payload:
            raise ProtocolError(f"GET {path} answered without its {key!r} key (keys: {sorted(payload)})")
        return payload[key]

    def list_connections(self) -> list[dict[str, Any]]:
        """The org's connections (``GET /connections``, Basic auth only)."""
        connections = self._get("/connections", {}, "connections")
        if not isinstance(connections, list):
            raise ProtocolError("GET /connections answered a 'connections' value that is not a list")
        return connections

    def connection_status(self, access_token: str) -> dict[str, Any]:
        """``GET /connections/status``: ``{"connection": {...}, "status": {...}}``."""
        payload, _, _ = self._transport.get_json("/connections/status", {"access_token": access_token})
        if "status" not in payload:
            raise ProtocolError("GET /connections/status answered without its 'status' key")
        return payload

    def get_store(self, access_token: str) -> dict[str, Any]:
        """The connection's store (``GET /store``)."""
        return self._get("/store", {"access_token": access_token}, "store")

    def get_record(
        self, spec: EntitySpec, access_token: str, record_id: str, *, force_fetch: bool = False
    ) -> dict[str, Any]:
        """One record by its Rutter id (``GET /<entity>/<id>``); ``NotFound`` when it does not exist."""
        params = {"access_token": access_token, **self._force_fetch_param(spec, force_fetch)}
        return self._get(f"{spec.endpoint}/{record_id}", params, spec.single_envelope)

    # -- page streams ------------------------------------------------------------------------

    def iter_pages(
        self,
        spec: EntitySpec,
        access_token: str,
        *,
        created_at_min: int | None = None,
        created_at_max: int | None = None,
        updated_at_min: int | None = None,
        updated_at_max: int | None = None,
        force_fetch: bool = False,
        limit: int | None = None,
        fragment: int = 0,
        cancel: threading.Event | None = None,
        bulk: bool = False,
    ) -> Iterator[Page]:
        """Every page of a list endpoint for the given inclusive ms filters, until ``next_cursor`` is null.

        ``bulk`` marks a range load, whose requests the rate limiter keeps to its bulk share.

        A generator: one page is requested only when the previous one has been consumed. Raises
        ``ProtocolError`` on a missing envelope or ``next_cursor`` key, a repeated cursor or a
        record outside the filters; ``ProductNotReady`` while the connection's initial sync runs.
        """
        given = {
            "created_at_min": created_at_min,
            "created_at_max": created_at_max,
            "updated_at_min": updated_at_min,
            "updated_at_max": updated_at_max,
        }
        filters = {k: v for k, v in given.items() if v is not None}
        if not spec.created_at_filter and ("created_at_min" in filters or "created_at_max" in filters):
            raise ValueError(f"{spec.endpoint} has no created_at filter; use iter_created or updated_at")
        params: dict[str, Any] = {
            "access_token": access_token,
            "limit": limit or self.config.page_limit,
            **filters,
            **self._force_fetch_param(spec, force_fetch),
        }
        bounds = _bounds(filters)
        window = (
            filters.get("created_at_min", filters.get("updated_at_min")),
            filters.get("created_at_max", filters.get("updated_at_max")),
        )
        seen: set[str] = set()
        cursor: str | None = None
        number = 0
        while True:
            request = params if cursor is None else {**params, "cursor": cursor}
            payload, nbytes, elapsed = self._transport.get_json(spec.endpoint, request, cancel=cancel, bulk=bulk)
            records, next_cursor = _page_parts(spec, payload, number)
            for field_name, low, high in bounds:
                _check_window(spec, records, field_name, low, high)
            self.stats.add(pages=1, records=len(records))
            yield Page(spec.name, records, fragment, number, window, nbytes, elapsed)
            if next_cursor is None:
                return
            if next_cursor in seen:
                raise ProtocolError(
                    f"{spec.endpoint} returned cursor of page {number} again after {len(seen)} pages; "
                    "the page stream would loop or repeat records"
                )
            seen.add(next_cursor)
            cursor = next_cursor
            number += 1

    def iter_created(
        self,
        spec: EntitySpec,
        access_token: str,
        start_ms: int,
        end_ms: int,
        *,
        fragments: int | None = None,
        force_fetch: bool = False,
        limit: int | None = None,
    ) -> Iterator[Page]:
        """The records created in the inclusive window ``[start_ms, end_ms]``, page by page.

        The window is split into ``fragments`` (default ``window_fragments``) disjoint inclusive
        sub-windows fetched concurrently. An endpoint without a ``created_at`` filter (customers)
        is read once by ``updated_at_min=start_ms`` (a record is updated no earlier than it is
        created), keeping the records whose ``created_at`` (or ``updated_at`` when null) falls in
        the window; the others are counted as ``skipped``.
        """
        if not spec.created_at_filter:
            yield from self._iter_created_by_update(spec, access_token, start_ms, end_ms, force_fetch, limit)
            return
        windows = split_window(start_ms, end_ms, fragments or self.config.window_fragments)
        yield from self._run_windows(spec, access_token, "created_at", windows, force_fetch, limit, bulk=True)

    def iter_updated(
        self,
        spec: EntitySpec,
        access_token: str,
        updated_at_min: int,
        updated_at_max: int | None = None,
        *,
        fragments: int = 1,
        force_fetch: bool = False,
        limit: int | None = None,
    ) -> Iterator[Page]:
        """The records updated at or after ``updated_at_min`` (and up to ``updated_at_max``), for syncs.

        With an upper bound, ``fragments`` > 1 splits the range like ``iter_created`` does; an open
        range is one stream because its end is Rutter's "now", which the client does not know.
        """
        if updated_at_max is None or fragments <= 1:
            windows: list[tuple[int, int | None]] = [(updated_at_min, updated_at_max)]
        else:
            windows = list(split_window(updated_at_min, updated_at_max, fragments))
        yield from self._run_windows(spec, access_token, "updated_at", windows, force_fetch, limit)

    # -- internals ---------------------------------------------------------------------------

    def _fragment_stream(
        self, spec: EntitySpec, access_token: str, kwargs: dict[str, Any], index: int, cancel: threading.Event
    ) -> Iterator[Page]:
        return self.iter_pages(spec, access_token, fragment=index, cancel=cancel, **kwargs)

    def _run_windows(
        self,
        spec: EntitySpec,
        access_token: str,
        field_name: str,
        windows: list[tuple[int, int]] | list[tuple[int, int | None]],
        force_fetch: bool,
        limit: int | None,
        bulk: bool = False,
    ) -> Iterator[Page]:
        """Fetch each ``field_name`` window as one fragment (on threads when there are several)."""
        factories: list[StreamFactory] = [
            partial(
                self._fragment_stream,
                spec,
                access_token,
                {
                    f"{field_name}_min": a,
                    f"{field_name}_max": b,
                    "force_fetch": force_fetch,
                    "limit": limit,
                    "bulk": bulk,
                },
                index,
            )
            for index, (a, b) in enumerate(windows)
        ]
        start_ms, end_ms = windows[0][0], windows[-1][1]
        started = time.monotonic()
        records = 0
        if len(factories) == 1:
            pages = factories[0](threading.Event())
        else:
            pages = merge_streams(factories, max_queued=self.config.queued_pages)
        for page in pages:
            records += len(page.records)
            yield page
        log.info(
            "fetched %d %s in %d fragment(s) for %s..%s in %.2fs",
            records,
            spec.name,
            len(factories),
            ms_to_iso(start_ms),
            ms_to_iso(end_ms) if end_ms is not None else "now",
            time.monotonic() - started,
        )

    def _iter_created_by_update(
        self,
        spec: EntitySpec,
        access_token: str,
        start_ms: int,
        end_ms: int,
        force_fetch: bool,
        limit: int | None,
    ) -> Iterator[Page]:
        fields = [f for f in (spec.partition_field, spec.partition_fallback) if f]
        for page in self.iter_pages(
            spec, access_token, updated_at_min=start_ms, force_fetch=force_fetch, limit=limit, bulk=True
        ):
            kept = [r for r in page.records if _in_window(_first_ms(r, fields), start_ms, end_ms)]
            skipped = len(page.records) - len(kept)
            if skipped:
                self.stats.add(records=-skipped, records_skipped=skipped)
            yield Page(
                page.entity,
                kept,
                page.fragment,
                page.number,
                (start_ms, end_ms),
                page.nbytes,
                page.elapsed_s,
                skipped,
            )

    @staticmethod
    def _force_fetch_param(spec: EntitySpec, force_fetch: bool) -> dict[str, str]:
        if not force_fetch:
            return {}
        if not spec.force_fetch:
            raise ValueError(
                f"force_fetch is documented for orders and transactions only, not {spec.name}; "
                "wait for the connection's initial sync instead"
            )
        return {"force_fetch": "true"}


def _page_parts(spec: EntitySpec, payload: dict[str, Any], number: int) -> tuple[list[dict[str, Any]], str | None]:
    """The records and next cursor of a list response, or ``ProtocolError`` if either is missing."""
    if spec.envelope not in payload:
        raise ProtocolError(f"{spec.endpoint} page {number} has no {spec.envelope!r} key (keys: {sorted(payload)})")
    if "next_cursor" not in payload:
        raise ProtocolError(
            f"{spec.endpoint} page {number} has no 'next_cursor' key: cannot tell the last page from a truncated stream"
        )
    records, next_cursor = payload[spec.envelope], payload["next_cursor"]
    if not isinstance(records, list):
        raise ProtocolError(f"{spec.endpoint} page {number}: {spec.envelope!r} is not a list")
    if next_cursor is not None and (not isinstance(next_cursor, str) or not next_cursor):
        raise ProtocolError(f"{spec.endpoint} page {number}: next_cursor is neither null nor a cursor")
    return records, next_cursor


def _bounds(filters: dict[str, int]) -> list[tuple[str, int | None, int | None]]:
    """The (record field, min, max) pairs the filters promise about every returned record."""
    out = []
    for name in ("created_at", "updated_at"):
        low, high = filters.get(f"{name}_min"), filters.get(f"{name}_max")
        if low is not None or high is not None:
            out.append((name, low, high))
    return out


def _check_window(
    spec: EntitySpec, records: list[dict[str, Any]], field_name: str, low: int | None, high: int | None
) -> None:
    """Raise ``ProtocolError`` for a record whose ``field_name`` lies outside ``[low, high]``.

    Null or unparsable timestamps cannot be placed and are left to validation, which rejects them
    with a proper reason instead of stopping the whole fetch.
    """
    for record in records:
        value = _ms(record.get(field_name)) if isinstance(record, dict) else None
        if value is not None and not _in_window(value, low, high):
            raise ProtocolError(
                f"{spec.endpoint} returned a record with {field_name} {ms_to_iso(value)} outside the "
                f"requested window {_show(low)}..{_show(high)}; the filter was not applied, so the "
                "page stream cannot be trusted"
            )


def _in_window(value: int | None, low: int | None, high: int | None) -> bool:
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return iso_to_ms(value)
    except ValueError:
        return None


def _first_ms(record: Any, fields: list[str]) -> int | None:
    if not isinstance(record, dict):
        return None
    for name in fields:
        value = _ms(record.get(name))
        if value is not None:
            return value
    return None


def _show(value: int | None) -> str:
    return "open" if value is None else ms_to_iso(value)
