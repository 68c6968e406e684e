"""Cancellation that holds for delayed, queued and running tasks, across restarts.

Celery's revoke list lives in the memory of the workers running when it is sent: a
revoke sent while no worker runs, or forgotten by a restarted worker, is lost. Here a
cancellation is a key in Redis (a tombstone, kept ``MEETINGTASKS_CANCEL_TTL``) that
every worker checks before it runs a task, on top of which:
- a delayed task is removed from the delay store, so it is never queued;
- a running task is told through Celery's revoke broadcast, which terminates it
  (prefork), and can notice on its own with ``MeetingTask.cancelled()``.
"""

from __future__ import annotations

from celery import Celery

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.status import TaskStatus
from meetingtasks.store import delayed, get_redis
from meetingtasks.store import status as status_store

REASON = "cancelled"


def cancel(app: Celery, task_id: str, keys: Keys, ttl: int) -> bool:
    """Cancel a task wherever it is; False if it had already finished. ``app`` tells the
    result backend and the running workers; the tombstone that drops a copy of its
    message still on its way is kept ``ttl`` seconds (``MEETINGTASKS_CANCEL_TTL``)."""
    record = status_store.read(keys, [task_id])[0]
    if record.status is not None and record.status.terminal:
        return False
    get_redis().set(keys.cancelled(task_id), REASON, ex=ttl)
    delayed.remove(keys, task_id)
    running = record.status is TaskStatus.PROCESSING
    if not running:
        app.backend.mark_as_revoked(task_id, reason=REASON)
    app.control.revoke(task_id, terminate=running, signal="SIGTERM")
    return True


def is_cancelled(task_id: str, keys: Keys | None = None) -> bool:
    return bool(get_redis().exists((keys or get_keys()).cancelled(task_id)))
