"""The one place that talks to Redis for meetingtasks' own structures.

Every structure of ours (the queue lists with their doorbells, delays, status records,
dead letters, sessions, meeting state) goes through the client and the Lua scripts
here, with names from ``meetingtasks.base.keys``; Celery's own result keys stay its
result backend's (``celery_ext/backend.py``).

A script runs on a connection of its own (``_ScriptConnections``), its reply read
straight off it, so that a ``WAIT`` for replicas rides in the same round trip. That
uses redis-py names below its documented API, checked by ``tests/test_private_api.py``:
a pool's ``connection_class`` and ``connection_kwargs`` (to open one like the pool's),
and a connection's ``pack_commands``, ``send_packed_command`` and ``read_response``
(``replication.py`` reads WAIT's answer with the last).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import NoScriptError, OutOfMemoryError
from redis.retry import Retry

from meetingtasks.base.record import with_field_names
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import NotReplicated, RedisFull
from meetingtasks.store import replication, sentinel


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """This process's client (redis-py's pool reconnects after fork and restarts).

    Its pool is bounded and blocking: past MEETINGTASKS_REDIS_MAX_CONNECTIONS a thread
    waits for a connection instead of failing (redis-py's default pool raises past 100).
    Commands are retried for about ten seconds while Redis is unreachable, so a Redis
    restart pauses our bookkeeping instead of failing it.
    """
    settings = get_settings()
    options: dict[str, Any] = {
        "max_connections": settings.redis_max_connections,
        "timeout": POOL_WAIT,
        "decode_responses": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=15),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    }
    return sentinel.client_for(settings.redis_url, blocking=True, **options)


#: Seconds a thread waits for a free connection of the client's pool (hundreds of
#: threads in an I/O pool share MEETINGTASKS_REDIS_MAX_CONNECTIONS).
POOL_WAIT = 20


@lru_cache(maxsize=1)
def get_quick_redis() -> redis.Redis:
    """A client that fails at once instead of retrying, for reads that can wait for their
    next round (the routes another process registered): they must not stall a send
    while Redis is unreachable."""
    return sentinel.client_for(
        get_settings().redis_url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )


@lru_cache(maxsize=1)
def get_bytes_redis() -> redis.Redis:
    """A client that reads replies as bytes, for entries that may hold bytes that are not
    UTF-8 (what a hostile producer put on a queue: held messages, the malformed list)."""
    return sentinel.client_for(
        get_settings().redis_url,
        decode_responses=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=15),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


LUA_DIR = Path(__file__).parent / "lua"


class LuaScript:
    """One of our Lua scripts, run by its SHA (EVALSHA) and loaded again when Redis has
    forgotten it (a restart).

    Scripts run on connections of their own, taken from a free list and put back
    (``_ScriptConnections``): redis-py's ``Script`` and pooled ``execute_command``
    (evalsha wrappers inspecting their arguments, taking and returning a pooled
    connection, checking it for stray data) cost a quarter of a whole single send here.
    When a connection fails, it is dropped and the call runs again on one of the
    client's, with its retries while Redis is unreachable, as every other command.
    """

    def __init__(self, source: str, replication_policy: replication.Policy | None = None) -> None:
        self.script = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        #: Its writes count once that many replicas have them (replication.py); None:
        #: as soon as the primary has them.
        self.replication = replication_policy

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        replicas = self.replication.replicas if self.replication else 0
        connection = _script_connections.take()
        try:
            reply = self._run(connection, command, replicas)
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
        except OutOfMemoryError as exc:
            _script_connections.give_back(connection)
            raise _full(exc) from exc
        except (redis.ResponseError, NotReplicated):
            _script_connections.give_back(connection)  # answered in full: still in step
            raise
        except BaseException:
            connection.disconnect()  # interrupted mid-reply (a time limit): out of step
            raise
        else:
            _script_connections.give_back(connection)
            return reply
        return self._run_retrying(command, replicas)

    def _run(self, connection: Any, command: tuple[Any, ...], replicas: int) -> Any:
        """The script's reply on ``connection`` (loading the script first if Redis forgot
        it); with ``replicas``, a WAIT rides in the same round trip and the write counts
        once that many replicas confirmed it."""
        wait = [replication.wait_command(replicas)] if replicas else []
        connection.send_packed_command(connection.pack_commands([command, *wait]))
        try:
            try:
                reply = connection.read_response()
            except NoScriptError:
                _read_quietly(connection, len(wait))
                connection.send_command("SCRIPT", "LOAD", self.script)
                connection.read_response()
                return self._run(connection, command, replicas)
            except redis.ResponseError:
                _read_quietly(connection, len(wait))  # the connection stays in step
                raise
            if replicas and self.replication is not None:
                self.replication.confirm(connection, int(connection.read_response()))
            return reply
        except redis.ResponseError as exc:
            if not replication.on_a_replica(exc):
                raise
            # A sentinel still named this server, demoted since: ask again, elsewhere.
            connection.disconnect()
            raise redis.ConnectionError(f"{exc}: the primary moved") from exc

    def _run_retrying(self, command: tuple[Any, ...], replicas: int) -> Any:
        """The call again on one of the client's connections, with the client's retries
        while Redis is unreachable (a restart, a failover), as every other command."""
        client = get_redis()
        connection = client.connection_pool.get_connection()
        try:
            retry = client.get_retry() or Retry(NoBackoff(), 0)
            return retry.call_with_retry(
                lambda: self._run(connection, command, replicas),
                lambda error: connection.disconnect(),
            )
        except OutOfMemoryError as exc:
            raise _full(exc) from exc
        finally:
            client.connection_pool.release(connection)


def _read_quietly(connection: Any, replies: int) -> None:
    """Read and drop ``replies`` answers still due on ``connection`` (errors included)."""
    for _ in range(replies):
        with contextlib.suppress(redis.ResponseError):
            connection.read_response()


def _full(exc: OutOfMemoryError) -> RedisFull:
    """Redis refused a script whole at maxmemory: nothing of it was written (each script
    makes a write that grows memory its first, where a full Redis says no)."""
    return RedisFull(
        f"Redis is at its maxmemory and refused this write; nothing of it was written "
        f"({exc}). Workers still drain the queues, which frees memory: retry later, or "
        "give Redis more memory (maxmemory)"
    )


class _ScriptConnections:
    """The connections scripts run on: last given back, first taken, so one busy thread
    keeps one connection, and a pool of hundreds of threads opens only as many as run
    scripts at the same moment. Not counted in the client's pool (bounded at
    ``max_connections``), so scripts never wait behind other commands."""

    #: Idle connections kept; more are closed when given back.
    KEPT = 64

    def __init__(self) -> None:
        self._idle: list[redis.connection.AbstractConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self) -> redis.connection.AbstractConnection:
        with self._lock:
            if self._pid != os.getpid():  # a forked child makes its own
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        pool = get_redis().connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def give_back(self, connection: redis.connection.AbstractConnection) -> None:
        with self._lock:
            if len(self._idle) < self.KEPT and self._pid == os.getpid():
                self._idle.append(connection)
                return
        connection.disconnect()


_script_connections = _ScriptConnections()


@cache
def script(name: str) -> LuaScript:
    """The Lua script ``lua/<name>.lua``, its ``F.<field>`` names of the task record
    spelled out (``base/record.py``)."""
    source = with_field_names((LUA_DIR / f"{name}.lua").read_text())
    replicated = name in replication.REPLICATED_SCRIPTS
    policy = replication.Policy.from_settings(get_settings()) if replicated else None
    return LuaScript(source, policy)
