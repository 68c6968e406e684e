"""Retention: how long a finished task's record stays in Redis, by who can still want it.

Plain Celery keeps nothing for a task whose result is ignored; keeping every record for
a day costs a busy platform tens of gigabytes. Here a record outlives its task only as
long as someone may read it:

- nobody awaits it (no dispatcher waiting, no client session, result ignored):
  ``MEETINGTASKS_RETENTION_UNWATCHED`` (a minute: long enough to look it up by id);
- a client session submitted it: the session's resume window
  (``MEETINGTASKS_GATEWAY_IDLE_TIMEOUT``), so a client that reconnects still finds it;
- a dispatcher or ``AsyncResult.get()`` may read it: ``MEETINGTASKS_RETENTION_RESULT``;
- it failed or timed out: ``MEETINGTASKS_RETENTION_FAILED`` (its dead letter stays
  until purged).

A result awaited by a dispatcher or ``AsyncResult.get()`` is kept only until it is read:
once ``wait()`` or ``get()`` returned it or its callback ran, what is left of its
window shrinks to the unwatched one.

A route's ``retention`` (routes/*.toml) and a call's (``apply_async(retention=...)``,
``TaskRequest.retention``) override the choice. A task not over yet (queued, running,
retrying) keeps its record ``MEETINGTASKS_STATUS_TTL`` after its last change.
"""

from __future__ import annotations

from meetingtasks.base.keys import Keys
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store import status as store

FAILURES = (TaskStatus.FAILED, TaskStatus.TIMEOUT)


def retention(
    status: TaskStatus,
    task_type: str | None,
    *,
    override: float | None = None,
    session: bool = False,
    awaited: bool = False,
    result_kept: bool = False,
) -> int:
    """Seconds the record of a task that moved to ``status`` is kept from now
    (``override``: the call's own retention, header ``mt_retention``)."""
    settings = get_settings()
    if status is TaskStatus.RETRYING:
        return settings.status_ttl
    route = get_route_table().find(task_type) if task_type else None
    chosen = override or (route.retention if route is not None else None)
    if chosen:
        return max(1, round(float(chosen)))
    if status in FAILURES:
        return settings.retention_failed
    if session:
        return max(1, round(settings.gateway_idle_timeout))
    if awaited or result_kept:
        return settings.retention_result
    return settings.retention_unwatched


def after_read(
    status: TaskStatus, task_type: str | None, *, override: float | None, session: bool
) -> int | None:
    """Seconds a finished record is kept once the dispatcher that awaited it has read it,
    or None to leave its window as it is: a failure (its dead letter's record), a task a
    client session may still resume for, a retention a route or the call chose."""
    if not status.terminal or status in FAILURES or session or override:
        return None
    route = get_route_table().find(task_type) if task_type else None
    if route is not None and route.retention:
        return None
    return get_settings().retention_unwatched


def read(keys: Keys, task_id: str) -> None:
    """``task_id``'s result was read by whoever awaited it (``AsyncResult.get()``)."""
    record = store.read(keys, [task_id])[0]
    if not record:
        return
    window = after_read(
        TaskStatus(record["status"]), record.get("type"),
        override=float(record["retention"]) if "retention" in record else None,
        session="session" in record,
    )  # fmt: skip
    if window is not None:
        store.release(keys, [task_id], window)
