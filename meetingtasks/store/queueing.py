"""Putting a task message on its queue list (or in the delay store) with its status.

The message and the task's first status (``queued``, or ``scheduled`` when delayed)
are written by one Lua script (``lua/enqueue.lua``), so the status is visible to
every process the moment the task can run, at no extra round trip. Inside ``batch()``
the sends accumulate and go out when the block ends, in one round trip: one script call
for all the messages (per ENQUEUE_CHUNK), then the other writes (Celery's task-sent
events), so a send costs one round trip, and a dispatcher batch one in all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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

#: Most tasks one enqueue script call puts: a bigger batch is several calls in its one
#: round trip, so no single call holds Redis for long.
ENQUEUE_CHUNK = 256
#: Most doorbell tokens kept per queue: enough to wake every idle consumer at once.
DOORBELL_TOKENS = 100


@dataclass
class Batch:
    """What a ``batch()`` block sends when it ends: the tasks put, per key family (one
    enqueue script call per ENQUEUE_CHUNK of them), then the other writes, in order."""

    tasks: dict[Keys, list[list[Any]]] = field(default_factory=dict)
    writes: list[Callable[[Pipeline], Any]] = field(default_factory=list)

    def send(self) -> None:
        if not self.tasks and not self.writes:
            return
        pipe = get_redis().pipeline(transaction=False)
        for keys, records in self.tasks.items():
            for start in range(0, len(records), ENQUEUE_CHUNK):
                keys_, args = _enqueue_call(keys, records[start : start + ENQUEUE_CHUNK])
                queue_script(pipe, "enqueue", keys_, args)
        for write in self.writes:
            write(pipe)
        execute(pipe)


@contextmanager
def batch() -> Iterator[None]:
    """Send everything published in this block (this thread) in one round trip."""
    if getattr(_batch, "current", None) is not None:
        yield  # nested: the outer block sends
        return
    _batch.current = Batch()
    try:
        yield
        _batch.current.send()
    finally:
        _batch.current = None


def current_batch() -> Batch | None:
    """The ``batch()`` block open in this thread, if any."""
    return getattr(_batch, "current", None)


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

    open_batch, writes = current_batch(), writebehind.here()
    if open_batch is not None:
        open_batch.writes.append(send)
    elif writes is not None:
        writes.add(send)
    else:
        send(get_redis())


def status_fields(
    keys: Keys, headers: dict[str, Any], task_type: str, queue: str, step: int
) -> dict[str, Any]:
    """What a task's status record says of it from the start (type and priority first:
    enqueue.lua counts by them)."""
    fields: dict[str, Any] = {"type": task_type, "priority": step, "queue": queue}
    for name, header in (("session", h.SESSION), ("request_id", h.REQUEST),
                         ("user", h.USER), ("meeting", h.MEETING)):  # fmt: skip
        if headers.get(header) is not None:
            fields[name] = str(headers[header])
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

    ``status`` holds the hash fields of a first send (``status_fields``: type and
    priority first); None for a retry, whose status the worker keeps (``retrying``).
    """
    first = "" if status is None else (TaskStatus.SCHEDULED if due else TaskStatus.QUEUED).value
    fields: list[Any] = []
    for pair in (status or {}).items():
        fields.extend(pair)
    entry = json.dumps([list_key, message, keys.status(task_id), doorbell]) if due else ""
    record = [task_id, list_key, doorbell, message, "" if due is None else due, entry, first,
              len(fields) // 2, *fields]  # fmt: skip
    open_batch = current_batch()
    if open_batch is not None:
        open_batch.tasks.setdefault(keys, []).append(record)
    else:
        script("enqueue")(*_enqueue_call(keys, [record]))


def _enqueue_call(keys: Keys, records: list[list[Any]]) -> tuple[list[Any], list[Any]]:
    """KEYS and ARGV of lua/enqueue.lua for ``records`` (one list of fields per task)."""
    args = [time.time(), get_settings().status_ttl, DOORBELL_TOKENS, keys.status("")]
    for record in records:
        args.extend(record)
    return [keys.task_stats(), keys.delayed(), keys.delayed_messages()], args
