"""The retry policy (tenacity): what is retried, how long to wait, when to give up.

Retried: anything whose error says ``retryable`` (429, 5xx, timeouts, refused or dropped
connections, truncated or unparsable bodies). Never retried: other 4xx answers and contract
violations, because repeating them cannot succeed and hides a real problem. Waits grow
exponentially with jitter so that the fragment threads of many runs do not retry in lockstep;
a ``Retry-After`` header (Rutter does not document one, but proxies and the sandbox send it)
replaces the backoff when present.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from rutter_pipeline.rutter.config import ClientConfig
from rutter_pipeline.rutter.errors import RateLimited, RutterError
from rutter_pipeline.rutter.stats import ClientStats

log = logging.getLogger("rutter_pipeline.rutter.transport")


class wait_retry_after_or_backoff(wait_base):
    """Honour ``Retry-After`` (capped, plus a little jitter); otherwise exponential backoff."""

    def __init__(self, backoff: wait_base, max_retry_after_s: float) -> None:
        self.backoff = backoff
        self.max_retry_after_s = max_retry_after_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            base = min(exc.retry_after, self.max_retry_after_s)
            return base + random.uniform(0, min(0.25, 0.1 * base + 0.01))
        return self.backoff(retry_state)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RutterError) and exc.retryable


def build_retrying(config: ClientConfig, stats: ClientStats, *, sleep: Callable[[float], None], what: str) -> Retrying:
    """A tenacity ``Retrying`` for one logical request (``what`` names it in log lines)."""

    def before_sleep(state: RetryCallState) -> None:
        stats.add(retries=1)
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "retrying %s after %s (attempt %d of %d) in %.2fs",
            what,
            type(exc).__name__,
            state.attempt_number,
            config.max_attempts,
            wait,
        )

    return Retrying(
        retry=retry_if_exception(_is_retryable),
        stop=stop_after_attempt(config.max_attempts) | stop_before_delay(config.max_retry_time_s),
        wait=wait_retry_after_or_backoff(
            wait_exponential(multiplier=config.backoff_initial_s, max=config.backoff_max_s)
            + wait_random(0, config.backoff_initial_s),
            config.max_retry_after_s,
        ),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=False,
    )
