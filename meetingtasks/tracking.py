"""Status tracking: Celery's view of each run becomes our status, for every process.

Celery records SUCCESS/FAILURE/RETRY/REVOKED in its result backend, visible only to a
caller holding the task id and blind to a worker that died. Here each transition is
also written to the task's status record (``status.py``), counted cluster-wide and
pushed, exactly once, to the dispatcher waiting on it and to the client session that
submitted it. The worker reports the start (``MeetingTask``) and the result backend the
end (``results.py``); the scheduler's monitor reports runs whose worker went silent
past their deadline.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.utils.json import dumps

from meetingtasks import headers as h
from meetingtasks.keys import Keys, get_keys
from meetingtasks.status import TaskStatus
from meetingtasks.store import status as store

#: Seconds past a run's hard time limit before the monitor calls it lost: the worker's
#: own limit normally ends it first.
MONITOR_SLACK = 10.0

TIME_LIMITS = (SoftTimeLimitExceeded, TimeLimitExceeded)


def begin_run(task: Task) -> int:
    """Report that ``task`` starts its current run; store.RUN unless it must not run."""
    request = task.request
    hard, soft = request.timelimit or (None, None)
    limit = hard or soft or task.time_limit or task.soft_time_limit
    now = time.time()
    deadline = now + float(limit) + MONITOR_SLACK if limit else None
    attempt = (request.retries or 0) + 1
    return store.begin(get_keys(), request.id, now, deadline, attempt, request.hostname or "")


def report(
    task_id: str,
    status: TaskStatus,
    request: Any = None,
    result: Any = None,
    error: str = "",
    keys: Keys | None = None,
) -> bool:
    """Move ``task_id`` to ``status`` and tell its dispatcher and client session.

    ``request`` (Celery's context of the run) names them; without it (the monitor, a
    canceller) they are read from the status record.
    """
    keys = keys or get_keys()
    if request is not None:
        notify_id, session_id, request_id = (
            h.get(request, h.NOTIFY),
            h.get(request, h.SESSION),
            h.get(request, h.REQUEST),
        )
        notify_channel = keys.notify_channel(notify_id) if notify_id else ""
        session_channel = keys.session_channel(session_id) if session_id else ""
    else:
        record = store.read(keys, [task_id])[0]
        notify_channel = record.get("notify_channel", "")
        session_channel = record.get("session_channel", "")
        request_id = record.get("request_id")
    notify = (notify_channel, json.dumps({"task_id": task_id, "status": status.value}))
    session = (session_channel, session_frame(task_id, status, request_id, result, error))
    return store.finish(keys, task_id, status, time.time(), error, notify, session)


def session_frame(
    task_id: str, status: TaskStatus, request_id: str | None, result: Any, error: str
) -> str:
    """The gateway frame that tells a client session how its task went."""
    frame: dict[str, Any]
    if status is TaskStatus.RETRYING:
        frame = {"op": "progress", "task_id": task_id, "state": "retrying", "error": error}
    else:
        frame = {"op": "result", "task_id": task_id, "status": status.value}
        if status is TaskStatus.COMPLETED:
            frame["result"] = result
        else:
            frame["error"] = error
    if request_id is not None:
        frame["request_id"] = request_id
    return dumps(frame)


def failure_status(exc: BaseException) -> TaskStatus:
    return TaskStatus.TIMEOUT if isinstance(exc, TIME_LIMITS) else TaskStatus.FAILED


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
