"""Redis operations of task status: finish a run, read, find overdue tasks.

The first status is written with the message itself (``queueing.py``) and
``processing`` when a worker takes it (``lua/fetch.lua``); the end of a run is one
Lua script that also stores Celery's result, so a terminal status is counted and
announced exactly once whoever (worker, monitor, canceller) reports it first.
"""

from __future__ import annotations

from dataclasses import dataclass

from meetingtasks.base.keys import Keys
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.store import get_redis, script


@dataclass(frozen=True)
class ResultMeta:
    """Celery's encoded result of a run, stored with the status change."""

    key: str
    value: str
    expires: int


def finish(
    keys: Keys,
    task_id: str,
    status: TaskStatus | None,
    now: float,
    error: str = "",
    notify: tuple[str, str] | None = None,
    session: tuple[str, str] | None = None,
    meta: ResultMeta | None = None,
    delivery_tag: str = "",
    ttl: int | None = None,
) -> bool:
    """Store ``meta`` and move to ``status`` (retrying or terminal; None: store only),
    the record then kept ``ttl`` seconds (``policies/retention.py``; None: the status TTL).

    False if the task was already over. ``notify`` and ``session`` are (channel,
    message) pairs published if the status changed.
    """
    notify_channel, notify_message = notify or ("", "")
    session_channel, frame = session or ("", "")
    return bool(
        script("finish")(
            keys=[
                keys.status(task_id),
                keys.deadlines(),
                keys.active(),
                keys.task_stats(),
                meta.key if meta else keys.result(task_id),
                keys.unacked(),
                keys.unacked_index(),
                keys.unacked_owner(),
            ],
            args=[
                task_id,
                status.value if status else "",
                now,
                ttl or get_settings().status_ttl,
                error,
                notify_channel,
                notify_message,
                session_channel,
                frame,
                meta.value if meta else "",
                meta.expires if meta else 0,
                delivery_tag,
            ],
        )
    )


def read(keys: Keys, task_ids: list[str]) -> list[dict[str, str]]:
    """The status records of ``task_ids`` (empty dicts for unknown ones), one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hgetall(keys.status(task_id))
    return list(pipe.execute())


def overdue(keys: Keys, now: float, limit: int) -> list[tuple[str, float]]:
    """Running tasks past their deadline, with it."""
    found = get_redis().zrangebyscore(
        keys.deadlines(), "-inf", now, start=0, num=limit, withscores=True
    )
    return [(str(entry[0]), float(entry[1])) for entry in found]


def counters(keys: Keys) -> dict[str, int]:
    return {str(f): int(v) for f, v in get_redis().hgetall(keys.task_stats()).items()}


def active_count(keys: Keys) -> int:
    return int(get_redis().scard(keys.active()))
