"""Redis operations of the durable delay store (the scheduler's sorted set).

A delayed task is a member of the ``delayed`` sorted set scored by its due time, its
whole kombu message kept beside it in ``delayed:messages``. Nothing of it lives in a
worker's memory, so a delay may outlast any visibility timeout and any restart.
"""

from __future__ import annotations

from meetingtasks.base.keys import Keys
from meetingtasks.store import get_redis, indexed, script
from meetingtasks.store.queueing import DOORBELL_TOKENS


def move_due(keys: Keys, now: float, limit: int) -> int:
    """Queue up to ``limit`` tasks that are due; returns how many moved."""
    keys_ = [keys.delayed(), keys.delayed_messages()]
    return int(script("move_due")(keys=keys_, args=[now, limit, DOORBELL_TOKENS]))


def remove(keys: Keys, task_id: str) -> bool:
    """Drop a delayed task before it is due; True if it was still waiting."""
    return indexed.remove(keys.delayed(), keys.delayed_messages(), task_id)


def count(keys: Keys) -> int:
    return int(get_redis().zcard(keys.delayed()))


def due_time(keys: Keys, task_id: str) -> float | None:
    score = get_redis().zscore(keys.delayed(), task_id)
    return None if score is None else float(score)
