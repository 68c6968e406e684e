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
from meetingtasks.base.record import RESULT_FIELDS, RecordField, TaskRecord
from meetingtasks.base.status import TaskStatus
from meetingtasks.store import get_redis, script


@dataclass(frozen=True)
class StoredResult:
    """Celery's result of a run, stored with the status change: the record's result
    fields (pairs), and Celery's meta published on the channel AsyncResult.get() waits on."""

    fields: list[str]
    channel: str
    meta: str


def counter_suffix(priority: int | str | None, task_type: str) -> str:
    """What a task's events are counted under: the ``<event>:<priority>:<type>`` fields of
    the counters hash, one per event (``counters`` adds them up by type and priority)."""
    return f"{'' if priority is None else priority}:{task_type}"


def finish(
    keys: Keys,
    task_id: str,
    status: TaskStatus | None,
    now: float,
    ttl: int,
    error: str = "",
    notify: tuple[str, str] | None = None,
    session: tuple[str, str] | None = None,
    result: StoredResult | None = None,
    delivery_tag: str = "",
    counted: str = "",
    held: str = "",
    celery_key: bool = False,
) -> bool:
    """Store ``result`` and move to ``status`` (retrying or terminal; None: store only),
    the record then kept ``ttl`` seconds (``policies/retention.py`` says how long).

    False if the task was already over. ``notify`` and ``session`` are (channel,
    message) pairs published if the status changed; ``counted`` is ``counter_suffix`` of
    the task ('' to read its type and priority from its record); the run's message,
    held in ``held`` under ``delivery_tag``, is released with it. With ``celery_key`` the
    result is also kept as Celery's Redis backend keeps one (a foreign producer's task).
    """
    notify_channel, notify_message = notify or ("", "")
    session_channel, frame = session or ("", "")
    return bool(
        script("finish")(
            keys=[
                keys.status(task_id),
                keys.deadlines(),
                keys.task_stats(),
                held or keys.status(task_id),
                result.channel if result and celery_key else keys.status(task_id),
            ],
            args=[
                task_id,
                status.value if status else "",
                now,
                ttl,
                error,
                notify_channel,
                notify_message,
                session_channel,
                frame,
                delivery_tag if held else "",
                result.channel if result else "",
                result.meta if result else "",
                counted,
                "1" if celery_key else "",
                *(result.fields if result else ()),
            ],
        )
    )


def read(keys: Keys, task_ids: list[str]) -> list[TaskRecord]:
    """The records of ``task_ids`` (empty for unknown ones), in one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hgetall(keys.status(task_id))
    return [
        TaskRecord(task_id, fields)
        for task_id, fields in zip(task_ids, pipe.execute(), strict=True)
    ]


def forget(keys: Keys, task_id: str) -> None:
    """Drop the result stored in a task's record (Celery's ``forget``); its status stays."""
    get_redis().hdel(keys.status(task_id), *RESULT_FIELDS)


def release(keys: Keys, task_ids: list[str], seconds: int) -> int:
    """Keep the records of ``task_ids`` at most ``seconds`` more, those that
    ``lua/release.lua`` finds done with once read; how many were shortened."""
    if not task_ids:
        return 0
    return int(script("release")([keys.status(task_id) for task_id in task_ids], [seconds]))


def count(keys: Keys, field: str, n: int = 1) -> None:
    """Add ``n`` to one counter (a field ``<event>:<priority>:<type>``)."""
    get_redis().hincrby(keys.task_stats(), field, n)


def count_worker_lost(keys: Keys, task_id: str) -> int:
    """One more run of the task whose pool process died under it; the count so far."""
    return int(get_redis().hincrby(keys.status(task_id), RecordField.WORKER_LOST, 1))


def overdue(keys: Keys, now: float, limit: int) -> list[tuple[str, float]]:
    """Running tasks past their deadline, with it."""
    found = get_redis().zrangebyscore(
        keys.deadlines(), "-inf", now, start=0, num=limit, withscores=True
    )
    return [(str(entry[0]), float(entry[1])) for entry in found]


@dataclass(frozen=True)
class Counters:
    """The cluster-wide counts of task events (dispatched, completed, failed…): in all,
    by task type and by priority step."""

    total: dict[str, int]
    by_type: dict[str, dict[str, int]]
    by_priority: dict[int, dict[str, int]]


def counters(keys: Keys) -> Counters:
    """The counters hash, added up (each field is one event of one type at one priority)."""
    total: dict[str, int] = {}
    by_type: dict[str, dict[str, int]] = {}
    by_priority: dict[int, dict[str, int]] = {}
    for field, value in get_redis().hgetall(keys.task_stats()).items():
        event, _, rest = str(field).partition(":")
        priority, _, task_type = rest.partition(":")
        if not task_type:
            continue  # not a field of this layout
        count = int(value)
        total[event] = total.get(event, 0) + count
        per_type = by_type.setdefault(task_type, {})
        per_type[event] = per_type.get(event, 0) + count
        if priority.isdigit():
            per_priority = by_priority.setdefault(int(priority), {})
            per_priority[event] = per_priority.get(event, 0) + count
    return Counters(total, by_type, by_priority)
