"""What the receiver accepts as a webhook body, and the stored form of it (no access token).

Rutter's payloads are JSON objects with string ``type`` and ``code`` (``{"type": "CONNECTION",
"code": "INITIAL_UPDATE", "connection_id": ..., "access_token": ...}``). Error messages are fixed
strings: they must never echo the body, which carries a token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

TOKEN_KEY = "access_token"


class InvalidWebhook(ValueError):
    """The body is not a webhook we can store (answered with 400)."""


@dataclass(frozen=True)
class Webhook:
    body_sha256: str
    type: str
    code: str
    connection_id: str | None
    payload: dict[str, Any] = field(repr=False)  # without any access token
    access_token: str | None = field(default=None, repr=False)


def parse_webhook(body: bytes) -> Webhook:
    """Parse and check a raw body; take its access token out of the payload."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidWebhook("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidWebhook("body is not a JSON object")
    if not isinstance(doc.get("type"), str) or not isinstance(doc.get("code"), str):
        raise InvalidWebhook("body needs string 'type' and 'code' fields")
    token = doc.get(TOKEN_KEY)
    connection_id = doc.get("connection_id")
    return Webhook(
        body_sha256=hashlib.sha256(body).hexdigest(),
        type=doc["type"],
        code=doc["code"],
        connection_id=connection_id if isinstance(connection_id, str) and connection_id else None,
        payload=without_tokens(doc),
        access_token=token if isinstance(token, str) and token else None,
    )


def without_tokens(value: Any) -> Any:
    """``value`` with every ``access_token`` key removed, at any depth (the registry keeps tokens)."""
    if isinstance(value, dict):
        return {k: without_tokens(v) for k, v in value.items() if k != TOKEN_KEY}
    if isinstance(value, list):
        return [without_tokens(v) for v in value]
    return value
