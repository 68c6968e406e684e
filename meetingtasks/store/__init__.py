"""The one place that talks to Redis for meetingtasks' own structures.

Kombu owns the queue lists and Celery the result keys; everything else (meeting
state, and later the delay store, dead letters, status, sessions) goes through the
client and Lua scripts here, with names from ``meetingtasks.keys``.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError
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


def queue_script(pipe: Pipeline, name: str, keys: list[Any], args: list[Any]) -> None:
    """Add a Lua script call to ``pipe`` by its SHA alone.

    redis-py's own script calls make a pipeline ask ``SCRIPT EXISTS`` first, one more
    round trip each time; ``execute`` below loads a script only when Redis says it
    forgot it (after a restart).
    """
    pipe.execute_command("EVALSHA", script(name).sha, len(keys), *keys, *args)


def execute(pipe: Pipeline) -> list[Any]:
    """Run ``pipe``; script calls Redis had forgotten are loaded and run again."""
    commands = [args for args, _options in pipe.command_stack]
    replies = pipe.execute(raise_on_error=False)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        client = get_redis()
        for name in {_script_name(commands[i][1]) for i in missing}:
            client.script_load(script(name).script)
        for i in missing:
            replies[i] = client.execute_command(*commands[i])
    errors = [reply for reply in replies if isinstance(reply, Exception)]
    if errors:
        raise errors[0]
    return list(replies)


def _script_name(sha: str) -> str:
    return next(path.stem for path in LUA_DIR.glob("*.lua") if script(path.stem).sha == sha)
