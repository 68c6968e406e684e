"""Redis operations of task status: begin and finish a run, read, find overdue tasks.

The first status is written with the message itself (``queueing.py``); these are the
transitions after it, each one Lua script, so a terminal status is counted and
announced exactly once whoever (worker, monitor, canceller) reports it first.
"""

from __future__ import annotations

from meetingtasks.keys import Keys
from meetingtasks.settings import get_settings
from meetingtasks.status import TaskStatus
from meetingtasks.store import get_redis, script

RUN = 0
CANCELLED = 1
ALREADY_OVER = 2


def begin(
    keys: Keys, task_id: str, now: float, deadline: float | None, attempt: int, worker: str
) -> int:
    """Mark a run as started; RUN, or CANCELLED / ALREADY_OVER when it must not run."""
    return int(
        script("begin")(
            keys=[keys.cancelled(task_id), keys.status(task_id), keys.deadlines(), keys.active()],
            args=[
                task_id,
                now,
                "" if deadline is None else deadline,
                attempt,
                worker,
                get_settings().status_ttl,
            ],
        )
    )


def finish(
    keys: Keys,
    task_id: str,
    status: TaskStatus,
    now: float,
    error: str = "",
    notify: tuple[str, str] | None = None,
    session: tuple[str, str] | None = None,
) -> bool:
    """Move to ``status`` (retrying or terminal); False if it was already terminal.

    ``notify`` and ``session`` are (channel, message) pairs published if it changed.
    """
    notify_channel, notify_message = notify or ("", "")
    session_channel, frame = session or ("", "")
    return bool(
        script("finish")(
            keys=[keys.status(task_id), keys.deadlines(), keys.active(), keys.task_stats()],
            args=[
                task_id,
                status.value,
                now,
                get_settings().status_ttl,
                error,
                notify_channel,
                notify_message,
                session_channel,
                frame,
            ],
        )
    )


def read(keys: Keys, task_ids: list[str]) -> list[dict[str, str]]:
    """The status records of ``task_ids`` (empty dicts for unknown ones), one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hgetall(keys.status(task_id))
    return list(pipe.execute())


def overdue(keys: Keys, now: float, limit: int) -> list[str]:
    """Running tasks past their deadline."""
    return list(get_redis().zrangebyscore(keys.deadlines(), "-inf", now, start=0, num=limit))


def counters(keys: Keys) -> dict[str, int]:
    return {field: int(value) for field, value in get_redis().hgetall(keys.task_stats()).items()}


def active_count(keys: Keys) -> int:
    return int(get_redis().scard(keys.active()))
