"""Putting a task message on its queue list (or in the delay store) with its status.

The message and the task's first status (``queued``, or ``scheduled`` when delayed)
are written in one MULTI, so the status is visible to every process the moment the
task can run, at no extra round trip. Inside ``batch()`` the writes of many sends
accumulate in one pipeline, executed when the block ends: the dispatcher's batched
path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.client import Pipeline

from meetingtasks.keys import Keys
from meetingtasks.settings import get_settings
from meetingtasks.status import TaskStatus
from meetingtasks.store import get_redis

_batch = threading.local()


@contextmanager
def batch() -> Iterator[None]:
    """Send everything published in this block (this thread) in one round trip."""
    if getattr(_batch, "pipe", None) is not None:
        yield  # nested: the outer block executes
        return
    _batch.pipe = get_redis().pipeline(transaction=False)
    try:
        yield
        _batch.pipe.execute()
    finally:
        _batch.pipe = None


#: Most doorbell tokens kept per queue: enough to wake every idle consumer at once.
DOORBELL_TOKENS = 100


def current_batch() -> Pipeline | None:
    """The pipeline of this thread's ``batch()`` block, if one is open."""
    return getattr(_batch, "pipe", None)


def put(
    keys: Keys,
    task_id: str,
    list_key: str,
    doorbell: str,
    message: str,
    due: float | None,
    status: dict[str, Any] | None,
) -> None:
    """Queue ``message`` on ``list_key`` and ring ``doorbell`` (or delay both until
    ``due``), recording ``status``.

    ``status`` holds the hash fields of a first send; None for a retry, whose status
    the worker keeps (``retrying``).
    """
    pipe = current_batch()
    own = pipe is None
    if pipe is None:
        pipe = get_redis().pipeline(transaction=True)
    if status is not None:
        _record(pipe, keys, task_id, status, TaskStatus.SCHEDULED if due else TaskStatus.QUEUED)
    if due is None:
        pipe.lpush(list_key, message)
        ring(pipe, doorbell)
    else:
        entry = json.dumps([list_key, message, keys.status(task_id), doorbell])
        pipe.hset(keys.delayed_messages(), task_id, entry)
        pipe.zadd(keys.delayed(), {task_id: due})
    if own:
        pipe.execute()


def ring(pipe: Pipeline, doorbell: str) -> None:
    """Wake a consumer blocked on ``doorbell`` (see broker.py)."""
    pipe.lpush(doorbell, 1)
    pipe.ltrim(doorbell, 0, DOORBELL_TOKENS - 1)


def _record(
    pipe: Pipeline, keys: Keys, task_id: str, fields: dict[str, Any], status: TaskStatus
) -> None:
    key = keys.status(task_id)
    pipe.delete(key)  # a task sent anew (dead-letter requeue) starts a fresh record
    pipe.hset(key, mapping={**fields, "status": status.value, "created_at": time.time()})
    pipe.expire(key, get_settings().status_ttl)
    stats = keys.task_stats()
    pipe.hincrby(stats, "dispatched", 1)
    pipe.hincrby(stats, f"type:{fields['type']}:dispatched", 1)
    pipe.hincrby(stats, f"priority:{fields['priority']}:dispatched", 1)
