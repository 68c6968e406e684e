"""The one place that talks to Redis for meetingtasks' own structures.

Kombu owns the queue lists and Celery the result keys; everything else (meeting
state, and later the delay store, dead letters, status, sessions) goes through the
client and Lua scripts here, with names from ``meetingtasks.base.keys``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from meetingtasks.base.settings import get_settings


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


@lru_cache(maxsize=1)
def get_quick_redis() -> redis.Redis:
    """A client that fails at once instead of retrying, for reads that can wait for their
    next round (the routes another process registered): they must not stall a send
    while Redis is unreachable."""
    return redis.Redis.from_url(
        get_settings().redis_url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )


LUA_DIR = Path(__file__).parent / "lua"


class LuaScript:
    """One of our Lua scripts, run by its SHA (EVALSHA) and loaded again when Redis has
    forgotten it (a restart).

    Each thread runs scripts on a connection of its own, held across calls: redis-py's
    ``Script`` and pooled ``execute_command`` (evalsha wrappers inspecting their
    arguments, taking and returning a pooled connection, checking it for stray data)
    cost a quarter of a whole single send here. When that connection fails, it is
    dropped and the call goes through the client, which retries while Redis is
    unreachable, as every other command does.
    """

    def __init__(self, source: str) -> None:
        self.script = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        connection = _held_connection()
        try:
            try:
                connection.send_command(*command)
                return connection.read_response()
            except NoScriptError:
                connection.send_command("SCRIPT", "LOAD", self.script)
                connection.read_response()
                connection.send_command(*command)
                return connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            _drop_held_connection()
        try:
            return get_redis().execute_command(*command)
        except NoScriptError:
            get_redis().script_load(self.script)
            return get_redis().execute_command(*command)


_held = threading.local()


def _held_connection() -> redis.connection.AbstractConnection:
    """This thread's connection for scripts (a forked child makes its own)."""
    if getattr(_held, "pid", None) != os.getpid():
        _held.connection = get_redis().connection_pool.make_connection()
        _held.pid = os.getpid()
    return _held.connection


def _drop_held_connection() -> None:
    connection = getattr(_held, "connection", None)
    if connection is not None and getattr(_held, "pid", None) == os.getpid():
        connection.disconnect()
    _held.pid = None


@cache
def script(name: str) -> LuaScript:
    """The Lua script ``lua/<name>.lua``."""
    return LuaScript((LUA_DIR / f"{name}.lua").read_text())
