"""Redis operations of task status: finish a run, read, find overdue tasks.

The first status is written with the message itself (``queueing.py``) and
``processing`` when a worker takes it (``lua/fetch.lua``); the end of a run is one
Lua script that also stores Celery's result in the same record, so a terminal status
is counted and announced exactly once whoever (worker, monitor, canceller) reports it
first, and a task leaves one key behind, not two.
"""

from __future__ import annotations

from dataclasses import dataclass

from meetingtasks.base.keys import Keys
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.store import get_redis, script

#: The record's fields that hold Celery's result of a run (``lua/finish.lua`` replaces
#: them all when it stores a new one; ``celery_ext/result_record.py`` fills them).
RESULT_FIELDS = ("result", "state", "traceback", "children", "meta")


@dataclass(frozen=True)
class StoredResult:
    """Celery's result of a run, stored with the status change: the record's result
    fields (pairs), and Celery's meta published on the channel AsyncResult.get() waits on."""

    fields: list[str]
    channel: str
    meta: str


def finish(
    keys: Keys,
    task_id: str,
    status: TaskStatus | None,
    now: float,
    error: str = "",
    notify: tuple[str, str] | None = None,
    session: tuple[str, str] | None = None,
    result: StoredResult | None = None,
    delivery_tag: str = "",
    ttl: int | None = None,
) -> bool:
    """Store ``result`` and move to ``status`` (retrying or terminal; None: store only),
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
                delivery_tag,
                result.channel if result else "",
                result.meta if result else "",
                *(result.fields if result else ()),
            ],
        )
    )


def read(keys: Keys, task_ids: list[str]) -> list[dict[str, str]]:
    """The status records of ``task_ids`` (empty dicts for unknown ones), one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hgetall(keys.status(task_id))
    return list(pipe.execute())


def forget(keys: Keys, task_id: str) -> None:
    """Drop the result stored in a task's record (Celery's ``forget``); its status stays."""
    get_redis().hdel(keys.status(task_id), *RESULT_FIELDS)


def release(keys: Keys, task_ids: list[str], seconds: int) -> int:
    """Keep the records of ``task_ids`` at most ``seconds`` more, those that
    ``lua/release.lua`` finds done with once read; how many were shortened."""
    if not task_ids:
        return 0
    return int(script("release")([keys.status(task_id) for task_id in task_ids], [seconds]))


def count_worker_lost(keys: Keys, task_id: str) -> int:
    """One more run of the task whose pool process died under it; the count so far."""
    return int(get_redis().hincrby(keys.status(task_id), "worker_lost", 1))


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
