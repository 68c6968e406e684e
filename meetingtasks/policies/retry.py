"""Retry policy: which failures are retried, and how long to wait before each attempt.

Celery's own ``retry_backoff``/``retry_jitter`` uses "full jitter" (a random delay
between 0 and the exponential bound), which can retry a failing dependency at once.
We keep "equal jitter": half of the exponential delay is fixed and half random, so
the delay still grows with every attempt while clients retrying together spread out.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import redis.exceptions

from meetingtasks.errors import Retryable

#: Failures worth another attempt: our Retryable and transient I/O. Everything else
#: (Permanent, validation, programming errors, time limits) fails at once.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    Retryable,
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE_ERRORS)


def backoff_delay(
    retries: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``retries + 1``: in [bound/2, bound].

    ``bound`` is ``base * 2**retries`` capped at ``cap``.
    """
    bound = min(cap, base * 2.0 ** min(retries, 64))
    return bound / 2.0 + rand() * bound / 2.0
