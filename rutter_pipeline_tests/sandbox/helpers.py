"""Plain HTTP helpers for talking to the sandbox in tests (deliberately not the project's client)."""

from __future__ import annotations

from collections.abc import Iterator

import requests

from rutter_pipeline.sandbox import SandboxHandle

VERSION = "2023-03-14"
DAY_MS = 86_400_000
JAN_14 = 1768348800000  # 2026-01-14T00:00:00.000Z, the day before the fixture's "now"


def session(sb: SandboxHandle, *, version: str | None = VERSION, auth: bool = True) -> requests.Session:
    s = requests.Session()
    if auth:
        s.auth = (sb.client_id, sb.client_secret)
    if version:
        s.headers["X-Rutter-Version"] = version
    return s


def get(sb: SandboxHandle, path: str, token: str | None = None, **params: object) -> requests.Response:
    if token is not None:
        params["access_token"] = token
    return session(sb).get(sb.base_url + path, params=params, timeout=30)


def pages(sb: SandboxHandle, path: str, token: str, **params: object) -> Iterator[dict]:
    """Every page of a list endpoint, following next_cursor; fails on a repeated cursor."""
    s = session(sb)
    seen: set[str] = set()
    cursor = None
    while True:
        query = {**params, "access_token": token}
        if cursor:
            query["cursor"] = cursor
        resp = s.get(sb.base_url + path, params=query, timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        yield body
        cursor = body["next_cursor"]
        if cursor is None:
            return
        assert cursor not in seen, "cursor repeated"
        seen.add(cursor)


def fetch_all(sb: SandboxHandle, path: str, token: str, envelope: str, **params: object) -> list[dict]:
    return [rec for page in pages(sb, path, token, **params) for rec in page[envelope]]
