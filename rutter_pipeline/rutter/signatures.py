"""Rutter webhook signatures: ``X-Rutter-Signature: sha256=<base64 HMAC-SHA256(body, secret)>``.

Verification works on the raw request bytes (re-serialising parsed JSON could change them) and
compares in constant time, so a forger learns nothing from response timing. Anything malformed is
simply "not verified": the receiver must answer the same way to every bad signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "sha256="
HEADER = "X-Rutter-Signature"


def _digest(body: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def sign(body: bytes, secret: str) -> str:
    """The header value Rutter sends for ``body`` signed with the org's client secret."""
    return PREFIX + base64.b64encode(_digest(body, secret)).decode("ascii")


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` is a valid signature of ``body``; False when missing, malformed or wrong."""
    if not header or not secret:
        return False
    header = header.strip()
    if not header.startswith(PREFIX):
        return False
    try:
        given = base64.b64decode(header[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, _digest(body, secret))
