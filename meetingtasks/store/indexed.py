"""A hash of entries by id with a sorted set ordering them: the shape of the delay
store (ordered by due time) and of the dead-letter queue (ordered by failure time).
Both structures change together in one MULTI."""

from __future__ import annotations

from meetingtasks.store import get_redis


def add(zset: str, entries: str, entry_id: str, score: float, entry: str) -> None:
    pipe = get_redis().pipeline(transaction=True)
    pipe.hset(entries, entry_id, entry)
    pipe.zadd(zset, {entry_id: score})
    pipe.execute()


def remove(zset: str, entries: str, entry_id: str) -> bool:
    """True if the entry was there."""
    pipe = get_redis().pipeline(transaction=True)
    pipe.zrem(zset, entry_id)
    pipe.hdel(entries, entry_id)
    removed, _ = pipe.execute()
    return bool(removed)


def get(entries: str, entry_ids: list[str]) -> list[str]:
    """The entries that exist among ``entry_ids``, in that order."""
    if not entry_ids:
        return []
    return [str(entry) for entry in get_redis().hmget(entries, entry_ids) if entry is not None]
