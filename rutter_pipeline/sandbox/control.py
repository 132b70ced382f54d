"""``SandboxControl``: a small requests-based client of the control API (``/_sandbox/``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import requests


class SandboxControlError(RuntimeError):
    pass


class SandboxControl:
    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")
        self._session = requests.Session()

    def _call(
        self, method: str, path: str, *, json: dict | None = None, params: dict | None = None, timeout: float = 60
    ) -> Any:
        resp = self._session.request(
            method, f"{self.root_url}/_sandbox{path}", json=json, params=params, timeout=timeout
        )
        if resp.status_code != 200:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text
            raise SandboxControlError(f"{method} /_sandbox{path}: {resp.status_code} {message}")
        return resp.json()

    def health(self) -> dict:
        return self._call("GET", "/health", timeout=5)

    def create_connection(
        self,
        *,
        platform: str = "SHOPIFY",
        orders_per_day: float = 40,
        history_days: int = 30,
        ready: bool = True,
        initial_sync_minutes: float = 30,
        batches: list[dict] | None = None,
        seed: int | None = None,
        batch_minutes: float = 60,
    ) -> dict:
        body = {
            "platform": platform,
            "orders_per_day": orders_per_day,
            "history_days": history_days,
            "ready": ready,
            "initial_sync_minutes": initial_sync_minutes,
            "batches": batches,
            "batch_minutes": batch_minutes,
            "seed": seed,
        }
        return self._call("POST", "/connections", json=body)

    def create_connections(
        self,
        count: int,
        *,
        platform: str = "SHOPIFY",
        orders_per_day: float = 40,
        history_days: int = 30,
        ready: bool = True,
        initial_sync_minutes: float = 30,
        seed: int | None = None,
    ) -> list[dict]:
        """``count`` connections alike in one request (their data differ); their summaries in order."""
        body = {
            "count": count,
            "platform": platform,
            "orders_per_day": orders_per_day,
            "history_days": history_days,
            "ready": ready,
            "initial_sync_minutes": initial_sync_minutes,
            "seed": seed,
        }
        return self._call("POST", "/connections", json=body, timeout=600)

    def list_connections(self) -> list[dict]:
        return self._call("GET", "/connections")

    def now(self) -> datetime:
        return datetime.fromisoformat(self._call("GET", "/clock")["now"].replace("Z", "+00:00"))

    def advance(self, minutes: float) -> datetime:
        doc = self._call("POST", "/clock/advance", json={"minutes": minutes}, timeout=600)
        return datetime.fromisoformat(doc["now"].replace("Z", "+00:00"))

    def action(self, connection_id: str, action: str) -> dict:
        return self._call("POST", f"/connections/{connection_id}/actions/{action}")

    def set_faults(self, **faults: object) -> dict:
        return self._call("POST", "/faults", json=faults)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def mutate(
        self,
        *,
        connection_id: str,
        entity: str,
        day: date,
        kind: str,
        field: str | None = None,
        count: int | None = None,
        value: object = None,
        index: int = 0,
    ) -> dict:
        """Serve the day's records changed (``mutations.KINDS``); ``set_field`` writes ``value`` at
        ``field`` in ``count`` records from the ``index``-th of the day (in created_at order)."""
        body = {
            "connection_id": connection_id,
            "entity": entity,
            "day": day.isoformat(),
            "kind": kind,
            "field": field,
            "count": count,
            "value": value,
            "index": index,
        }
        return self._call("POST", "/mutations", json=body)

    def clear_mutations(self, connection_id: str | None = None) -> None:
        self._call("DELETE", "/mutations", params={"connection_id": connection_id} if connection_id else None)

    def ground_truth(
        self,
        entity: str,
        connection_id: str,
        *,
        created_at_min: int | None = None,
        created_at_max: int | None = None,
        updated_at_min: int | None = None,
        updated_at_max: int | None = None,
        sort: str | None = None,
    ) -> list[dict]:
        params = {
            "entity": entity,
            "connection_id": connection_id,
            "created_at_min": created_at_min,
            "created_at_max": created_at_max,
            "updated_at_min": updated_at_min,
            "updated_at_max": updated_at_max,
            "sort": sort,
        }
        return self._call(
            "GET", "/ground_truth", params={k: v for k, v in params.items() if v is not None}, timeout=600
        )

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def webhook_log(self) -> list[dict]:
        return self._call("GET", "/webhooks")

    def configure_webhooks(self, **options: object) -> dict:
        """Change webhook delivery at run time: url, retry_base, max_retries, duplicate, shuffle, timeout."""
        return self._call("POST", "/webhooks/config", json=options)

    def wait_for_webhooks(self, timeout: float = 10) -> None:
        doc = self._call("POST", "/webhooks/wait", json={"timeout": timeout}, timeout=timeout + 10)
        if not doc["drained"]:
            raise TimeoutError(f"{doc['pending']} webhook deliveries still pending after {timeout} s")

    def close(self) -> None:
        self._session.close()
