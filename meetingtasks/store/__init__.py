"""The one place that talks to Redis for meetingtasks' own structures.

Kombu owns the queue lists and Celery the result keys; everything else (meeting
state, and later the delay store, dead letters, status, sessions) goes through the
client and Lua scripts here, with names from ``meetingtasks.keys``.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from meetingtasks.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """This process's client (redis-py's pool reconnects after fork and restarts).

    Commands are retried for about ten seconds while Redis is unreachable, so a Redis
    restart pauses our bookkeeping instead of failing it.
    """
    return redis.Redis.from_url(
        get_settings().redis_url,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=15),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


LUA_DIR = Path(__file__).parent / "lua"


@cache
def script(name: str) -> Script:
    """The Lua script ``lua/<name>.lua``, registered on this process's client (EVALSHA)."""
    return get_redis().register_script((LUA_DIR / f"{name}.lua").read_text())
