"""Status tracking: Celery's view of each run becomes our status, for every process.

Celery records SUCCESS/FAILURE/RETRY/REVOKED in its result backend, visible only to a
caller holding the task id and blind to a worker that died. Here each transition is
also written to the task's status record (``status.py``), counted cluster-wide and
pushed, exactly once, to the dispatcher waiting on it and to the client session that
submitted it. A worker marks a task processing when it takes it (``lua/fetch.lua``);
the result backend reports the end, in the same step that stores Celery's result in
the same record (``celery_ext/backend.py``); the scheduler's monitor reports runs
whose worker went silent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery import states
from celery.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from meetingtasks.base import frames
from meetingtasks.base import headers as h
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.record import RecordField
from meetingtasks.base.status import TaskStatus
from meetingtasks.policies import retention
from meetingtasks.store import status as store
from meetingtasks.store.status import StoredResult

TIME_LIMITS = (SoftTimeLimitExceeded, TimeLimitExceeded)


def watched(headers: dict[str, Any]) -> bool:
    """Whether anyone may read a task's record: its result is kept (``AsyncResult``), or
    a dispatcher or a client session waits on it, a retention was chosen for it, or a
    time limit makes the timeout monitor follow it. A task nobody watches (a service's
    own ``ignore_result`` task, sent with ``delay()``) keeps no record: nothing to write
    when it is sent, taken or done, and nothing left in Redis after it. It is still
    counted, cancelled and dead-lettered (a failure records its end, as any failure)."""
    if not headers.get("ignore_result"):
        return True
    if any(headers.get(name) for name in (h.NOTIFY, h.SESSION, h.RETENTION)):
        return True
    return any(limit is not None for limit in headers.get("timelimit") or ())


TIME_LIMIT_NAMES = frozenset(exc.__name__ for exc in TIME_LIMITS)


def status_for(state: str, result: Any) -> TaskStatus | None:
    """Our status for a Celery state (None for states that are not an end: STARTED…).

    ``result`` is what Celery stores with the state: the exception of a failure or
    a revocation (an exception, or the JSON form Celery stores it in), the value of a
    success.
    """
    if state == states.SUCCESS:
        return TaskStatus.COMPLETED
    if state == states.FAILURE:
        timed_out = _exception(result)[0] in TIME_LIMIT_NAMES
        return TaskStatus.TIMEOUT if timed_out else TaskStatus.FAILED
    if state == states.RETRY:
        return TaskStatus.RETRYING
    if state == states.REVOKED:
        # A task that expired before it could start timed out; any other revoke cancelled it.
        return TaskStatus.TIMEOUT if "expired" in str(result) else TaskStatus.CANCELLED
    return None


#: Celery's state for each of our statuses that ends a run (the inverse of status_for).
_CELERY_STATES = {
    TaskStatus.COMPLETED.value: states.SUCCESS,
    TaskStatus.FAILED.value: states.FAILURE,
    TaskStatus.CANCELLED.value: states.REVOKED,
    TaskStatus.RETRYING.value: states.RETRY,
}


def celery_state_of(status: str | None, result: Any) -> str | None:
    """Celery's state that our ``status`` implies (None if it implies none: queued,
    processing…); ``result`` tells a revocation that timed out (an expired task) from a
    time limit."""
    if status == TaskStatus.TIMEOUT.value:
        revoked = _exception(result)[0] == TaskRevokedError.__name__
        return states.REVOKED if revoked else states.FAILURE
    return _CELERY_STATES.get(status or "")


def report(
    task_id: str,
    status: TaskStatus | None,
    request: Any = None,
    result: Any = None,
    error: str = "",
    keys: Keys | None = None,
    stored: StoredResult | None = None,
) -> bool:
    """Move ``task_id`` to ``status`` (storing Celery's result, ``stored``) and tell
    its dispatcher and client session.

    ``request`` (Celery's context of the run) names them; without it (the monitor, a
    canceller) they are read from the status record.
    """
    keys = keys or get_keys()
    if status is None:
        kept = retention.policy().while_running
        return store.finish(keys, task_id, None, time.time(), kept, result=stored)
    if request is not None:
        notify_id, session_id, request_id = (
            h.get(request, h.NOTIFY),
            h.get(request, h.SESSION),
            h.get(request, h.REQUEST),
        )
        override = h.get(request, h.RETENTION)
        foreign = bool(h.get(request, h.FOREIGN))
    else:
        record = store.read(keys, [task_id])[0]
        notify_id, session_id, request_id = (
            record.get(RecordField.NOTIFY),
            record.get(RecordField.SESSION),
            record.get(RecordField.REQUEST),
        )
        override = record.get(RecordField.RETENTION)
        foreign = bool(record.get(RecordField.FOREIGN))
    notify_channel = keys.notify_channel(notify_id) if notify_id else ""
    session_channel = keys.session_channel(session_id) if session_id else ""
    kept = retention.policy().seconds(
        status, override=override, session=bool(session_channel),
        awaited=bool(notify_channel), result_kept=stored is not None,
    )  # fmt: skip
    notify = session = None  # messages built only for whoever listens
    if notify_channel:
        notify = (notify_channel, json.dumps({"task_id": task_id, "status": status.value}))
    if session_channel:
        session = (session_channel, _session_frame(task_id, status, request_id, result, error))
    tag = (h.get(request, h.DELIVERY_TAG) or "") if request is not None else ""
    held = (h.get(request, h.HELD) or "") if request is not None else ""
    counted = ""
    if request is not None and getattr(request, "task", None):
        priority = (getattr(request, "delivery_info", None) or {}).get("priority")
        counted = store.counter_suffix(priority, request.task)
    return store.finish(
        keys, task_id, status, time.time(), kept, error, notify, session, stored, tag,
        counted=counted, held=held, celery_key=foreign,
    )  # fmt: skip


def _session_frame(
    task_id: str, status: TaskStatus, request_id: str | None, result: Any, error: str
) -> str:
    """The frame that tells a client session how its task's run went."""
    if status is TaskStatus.RETRYING:
        return frames.task_retrying(task_id, error, request_id)
    return frames.task_result(task_id, status.value, result, error, request_id)


def describe(exc: Any) -> str:
    """A one-line error for status records and client frames."""
    name, message = _exception(exc)
    return f"{name}: {message}" if name else message


def _exception(exc: Any) -> tuple[str, str]:
    """(type name, message) of an exception or of Celery's JSON form of one."""
    if isinstance(exc, BaseException):
        return type(exc).__name__, str(exc)
    if isinstance(exc, dict) and "exc_type" in exc:
        message = exc.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(part) for part in message)
        return str(exc["exc_type"]), "" if message is None else str(message)
    return "", "" if exc is None else str(exc)
