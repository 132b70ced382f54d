"""Read a request body up to a limit, without ever holding more than the limit in memory."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is (or says it is) larger than the limit (answered with 413)."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body; refuses early on a declared length above ``limit`` and counts while reading.

    (uvicorn already refuses a malformed Content-Length; counting covers chunked bodies.)
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise BodyTooLarge
        body += chunk
    return bytes(body)
