"""Putting a task message on its queue list (or in the delay store) with its status.

The message and the task's first status (``queued``, or ``scheduled`` when delayed)
are written by one Lua script (``lua/enqueue.lua``), so the status is visible to
every process the moment the task can run, at no extra round trip. Inside ``batch()``
the writes of many sends accumulate in one pipeline, executed when the block ends:
one round trip per send (message and Celery's task-sent event), or per dispatcher
batch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from kombu.utils.json import dumps
from redis.client import Pipeline

from meetingtasks import headers as h
from meetingtasks.keys import Keys
from meetingtasks.settings import get_settings
from meetingtasks.status import TaskStatus
from meetingtasks.store import execute, get_redis, queue_script, script, writebehind

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
        execute(_batch.pipe)
    finally:
        _batch.pipe = None


#: Most doorbell tokens kept per queue: enough to wake every idle consumer at once.
DOORBELL_TOKENS = 100


def current_batch() -> Pipeline | None:
    """The pipeline of this thread's ``batch()`` block, if one is open."""
    return getattr(_batch, "pipe", None)


def put_task(keys: Keys, queue: str, step: int, message: dict[str, Any]) -> None:
    """Queue a Celery task message (kombu's envelope) on ``queue`` at priority ``step``,
    or in the delay store when its due time is ahead; a first send records its status."""
    headers = message["headers"]
    task_id, task_type = headers["id"], headers["task"]
    due = headers.get(h.DUE_AT)
    due = float(due) if due is not None and float(due) > time.time() else None
    if due is not None:
        headers["eta"] = None  # the worker gets it when due: no ETA to hold in memory
    # The worker's task removes its message from the unacknowledged set by this tag,
    # in the step that stores its result (lua/finish.lua).
    headers[h.DELIVERY_TAG] = message["properties"]["delivery_tag"]
    first_send = not headers.get("retries")
    status = status_fields(keys, headers, task_type, queue, step) if first_send else None
    list_key, doorbell = keys.queue(queue, step), keys.doorbell(queue)
    put(keys, task_id, list_key, doorbell, to_json(message), due, status)


def to_json(envelope: dict[str, Any]) -> str:
    """A message envelope as JSON text: orjson (ten times kombu's encoder here), or
    kombu's encoder for what orjson does not take."""
    try:
        return orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(dumps(envelope))


def publish(channels: list[str], payload: str) -> None:
    """Publish an event (Celery's task-sent…) with the current batch, if any; in a
    worker through its write-behind; else at once on our long-lived client (kombu would
    make a new client for each)."""

    def send(pipe: Any) -> None:
        for channel in channels:
            pipe.publish(channel, payload)

    pipe, writes = current_batch(), writebehind.here()
    if pipe is not None:
        send(pipe)
    elif writes is not None:
        writes.add(send)
    else:
        send(get_redis())


def status_fields(
    keys: Keys, headers: dict[str, Any], task_type: str, queue: str, step: int
) -> dict[str, Any]:
    """What a task's status record says of it from the start."""
    fields: dict[str, Any] = {"type": task_type, "queue": queue, "priority": step}
    for field, header in (("session", h.SESSION), ("request_id", h.REQUEST),
                          ("user", h.USER), ("meeting", h.MEETING)):  # fmt: skip
        if headers.get(header) is not None:
            fields[field] = str(headers[header])
    if headers.get(h.SESSION) is not None:
        fields["session_channel"] = keys.session_channel(str(headers[h.SESSION]))
    if headers.get(h.NOTIFY) is not None:
        fields["notify_channel"] = keys.notify_channel(str(headers[h.NOTIFY]))
    return fields


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
    first = "" if status is None else (TaskStatus.SCHEDULED if due else TaskStatus.QUEUED).value
    fields = [] if status is None else [x for pair in _ordered(status) for x in pair]
    entry = json.dumps([list_key, message, keys.status(task_id), doorbell]) if due else ""
    call = (
        [keys.status(task_id), keys.task_stats(), list_key, doorbell, keys.delayed(),
         keys.delayed_messages()],
        [task_id, message, "" if due is None else due, entry, first, time.time(),
         get_settings().status_ttl, DOORBELL_TOKENS, *fields],
    )  # fmt: skip
    pipe = current_batch()
    if pipe is not None:
        queue_script(pipe, "enqueue", *call)
    else:
        script("enqueue")(*call)


def _ordered(fields: dict[str, Any]) -> list[tuple[str, Any]]:
    """The status fields with type and priority first (enqueue.lua counts by them)."""
    rest = [(k, v) for k, v in fields.items() if k not in ("type", "priority")]
    return [("type", fields["type"]), ("priority", fields["priority"]), *rest]
