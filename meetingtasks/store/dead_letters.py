"""Redis operations of the dead-letter queue: entries by task id, ordered by failure time."""

from __future__ import annotations

from meetingtasks.base.keys import Keys
from meetingtasks.store import get_redis, indexed


def add(keys: Keys, task_id: str, failed_at: float, entry: str) -> None:
    """File one dead letter (a task that failed again replaces its earlier entry)."""
    indexed.add(keys.dlq(), keys.dlq_entries(), task_id, failed_at, entry)


def page(keys: Keys, offset: int, limit: int) -> list[str]:
    """Entries oldest first."""
    ids = get_redis().zrange(keys.dlq(), offset, offset + limit - 1)
    return indexed.get(keys.dlq_entries(), [str(task_id) for task_id in ids])


def get(keys: Keys, task_ids: list[str]) -> list[str]:
    return indexed.get(keys.dlq_entries(), task_ids)


def remove(keys: Keys, task_id: str) -> bool:
    return indexed.remove(keys.dlq(), keys.dlq_entries(), task_id)


def count(keys: Keys) -> int:
    return int(get_redis().zcard(keys.dlq()))


def purge(keys: Keys) -> int:
    """Empty the queue; returns how many entries it held."""
    pipe = get_redis().pipeline(transaction=True)
    pipe.zcard(keys.dlq())
    pipe.delete(keys.dlq(), keys.dlq_entries())
    held, _ = pipe.execute()
    return int(held)
