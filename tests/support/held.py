"""What workers hold right now, read straight from Redis (for assertions and diagnostics)."""

from __future__ import annotations

from typing import Any

from meetingtasks.base.keys import get_keys


def held_now(redis: Any) -> dict[str, dict[str, str]]:
    """Every held hash (``Keys.held``) that holds something: its name -> tag -> message."""
    pattern = get_keys().held_prefix() + "*"
    return {str(key): redis.hgetall(key) for key in redis.scan_iter(match=pattern)}


def holders(redis: Any) -> dict[str, set[str]]:
    """Consumer id -> the delivery tags it holds, over every queue."""
    prefix = get_keys().held_prefix()
    found: dict[str, set[str]] = {}
    for key, entries in held_now(redis).items():
        consumer = key.removeprefix(prefix).split(":", 1)[1]
        found.setdefault(consumer, set()).update(entries)
    return found
