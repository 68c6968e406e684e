"""Redis operations of the durable delay store (the scheduler's sorted set).

A delayed task is a member of the ``delayed`` sorted set scored by its due time, its
whole kombu message kept beside it in ``delayed:messages``. Nothing of it lives in a
worker's memory, so a delay may outlast any visibility timeout and any restart.
"""

from __future__ import annotations

import json
import logging

from meetingtasks.base.keys import Keys
from meetingtasks.store import get_redis, indexed, script
from meetingtasks.store.queueing import DOORBELL_TOKENS

log = logging.getLogger(__name__)


def move_due(keys: Keys, now: float, limit: int) -> int:
    """Queue up to ``limit`` tasks that are due; returns how many moved (fewer when other
    workers moved some first)."""
    redis = get_redis()
    due = [str(i) for i in redis.zrangebyscore(keys.delayed(), "-inf", now, start=0, num=limit)]
    if not due:
        return 0
    call_keys = [keys.delayed(), keys.delayed_messages()]
    moving: list[str] = []
    orphans: list[str] = []
    for task_id, entry in zip(due, redis.hmget(keys.delayed_messages(), due), strict=True):
        if entry is None:
            orphans.append(task_id)
            continue
        try:
            list_key, _, status_key, doorbell = json.loads(entry)
        except ValueError:
            log.error("delayed task %s has an unreadable entry; left in place", task_id)
            continue
        call_keys += [list_key, status_key, doorbell]
        moving += [task_id, str(entry)]
    args = [now, DOORBELL_TOKENS, len(moving) // 2, *moving, *orphans]
    return int(script("move_due")(keys=call_keys, args=args))


def remove(keys: Keys, task_id: str) -> bool:
    """Drop a delayed task before it is due; True if it was still waiting."""
    return indexed.remove(keys.delayed(), keys.delayed_messages(), task_id)


def count(keys: Keys) -> int:
    return int(get_redis().zcard(keys.delayed()))


def due_time(keys: Keys, task_id: str) -> float | None:
    score = get_redis().zscore(keys.delayed(), task_id)
    return None if score is None else float(score)


def scheduler_counters(keys: Keys) -> dict[str, int]:
    """What the scheduler loops did, deployment-wide: moved, promoted, recovered…"""
    counters = get_redis().hgetall(keys.scheduler_stats())
    return {str(name): int(value) for name, value in counters.items()}
