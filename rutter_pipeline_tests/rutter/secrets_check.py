"""Helpers to prove a secret appears nowhere: in log text, exception text, repr or cause chain."""

from __future__ import annotations

import traceback


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and formatted traceback of ``exc`` and of everything chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        stack += [current.__cause__, current.__context__, getattr(current, "last", None)]
    texts.append("".join(traceback.format_exception(exc)))
    return texts


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret leaked into: {text[:300]!r}"
