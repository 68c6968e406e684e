"""Retry policy: which failures are retried, and how long to wait before each attempt.

Celery's own ``retry_backoff``/``retry_jitter`` uses "full jitter" (a random delay
between 0 and the exponential bound), which can retry a failing dependency at once.
We keep "equal jitter" (redis-py's ``EqualJitterBackoff``, as every reconnect here):
half of the exponential delay is fixed and half random, so the delay still grows with
every attempt while clients retrying together spread out.
"""

from __future__ import annotations

import redis.exceptions
from redis.backoff import EqualJitterBackoff

from meetingtasks.base.settings import Settings
from meetingtasks.errors import Retryable
from meetingtasks.store.clients import pause

#: Failures worth another attempt: our Retryable and transient I/O. Everything else
#: (Permanent, validation, programming errors, time limits) fails at once.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    Retryable,
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def retry_delay(retries: int, settings: Settings) -> float:
    """Seconds to wait before retry number ``retries + 1``: between half and all of
    ``retry_backoff_base * 2**retries``, capped at ``retry_backoff_max``."""
    backoff = EqualJitterBackoff(cap=settings.retry_backoff_max, base=settings.retry_backoff_base)
    return pause(backoff, retries)
