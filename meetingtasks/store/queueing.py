"""Putting a task message on its queue list (or in the delay store) with its status.

The message and the task's first status (``queued``, or ``scheduled`` when delayed)
are written by one Lua script (``lua/enqueue.lua``), so the status is visible to
every process the moment the task can run, at no extra round trip. Inside ``batch()``
the sends accumulate: one script call per ENQUEUE_CHUNK messages, Celery's task-sent
events riding in the last, so a send costs one command and a dispatcher batch a few,
written while the batch is still being built (``Batch``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, NamedTuple

import orjson
from kombu.utils.json import dumps

from meetingtasks.base import headers as h
from meetingtasks.base.keys import Keys
from meetingtasks.base.record import FROM_HEADERS, RecordField
from meetingtasks.base.status import TaskStatus
from meetingtasks.errors import RedisFull
from meetingtasks.store import get_redis, listeners, script, writebehind
from meetingtasks.store.status import counter_suffix

_batch = threading.local()

#: Most tasks one enqueue script call puts: a bigger batch is several calls in its one
#: round trip, so no single call holds Redis for long.
ENQUEUE_CHUNK = 256
#: Most doorbell tokens kept per queue: enough to wake every idle consumer at once.
DOORBELL_TOKENS = 100


class Batch:
    """What a ``batch()`` block sends: the tasks put, per key family, and the events
    published, in that order.

    The events ride in the last enqueue script call, so a single send (message, status
    and task-sent event) is one command. A batch is one script call per ENQUEUE_CHUNK
    tasks: each full chunk goes out from a sender thread while the next is being built
    (Redis's work overlaps ours), the rest when the block ends, which waits for all.
    """

    __slots__ = ("encode_sent", "events", "sent", "shipped", "tasks", "written")

    def __init__(self) -> None:
        #: Per key family and status TTL (one script call's), the tasks to put.
        self.tasks: dict[tuple[Keys, int], list[Record]] = {}
        #: (channel, message) pairs to publish once the tasks are queued.
        self.events: list[tuple[str, str]] = []
        #: Task-sent events, published together (grouped) by ``encode_sent`` at the end.
        self.sent: list[dict[str, Any]] = []
        self.encode_sent: Callable[[list[dict[str, Any]]], list[tuple[str, str]]] | None = None
        #: Each script call on its way, with the ids of the tasks it puts.
        self.shipped: list[tuple[Future[Any], list[str]]] = []
        #: Ids of the tasks already written (reported if a later call is refused).
        self.written: list[str] = []

    def add(self, keys: Keys, record: Record) -> None:
        family = (keys, record.status_ttl)
        records = self.tasks.setdefault(family, [])
        records.append(record)
        if len(records) == ENQUEUE_CHUNK:
            write = partial(script("enqueue"), *_enqueue_call(keys, records, record.status_ttl))
            self.shipped.append((_sender().submit(write), _ids(records)))
            self.tasks[family] = []

    def send(self) -> None:
        task_events = bool(self.sent and self.encode_sent and listeners.task_events.open())
        if task_events and self.encode_sent is not None:
            self.events.extend(self.encode_sent(self.sent))
        chunks = [(family, records) for family, records in self.tasks.items() if records]
        calls = [(_enqueue_call(keys, records, ttl), _ids(records))
                 for (keys, ttl), records in chunks]  # fmt: skip
        if calls:
            _with_events(calls[-1][0][1], self.events)
            writes = [(partial(script("enqueue"), *call), ids) for call, ids in calls]
        else:
            writes = [(partial(_publish_now, self.events), [])] if self.events else []
        for write, ids in writes:
            if self.shipped:  # after the chunks shipped, in their order
                self.shipped.append((_sender().submit(write), ids))
                continue
            try:
                reply = write()
            except RedisFull as full:
                raise self._refused(full, ids) from None
            self.written.extend(ids)
            if task_events and isinstance(reply, list):  # the call that published them
                listeners.task_events.heard(int(reply[1]))
        self.wait()

    def wait(self) -> None:
        """Until every chunk shipped is written; raises the first failure (RedisFull
        saying which tasks went in and which did not)."""
        shipped, self.shipped = self.shipped, []
        failures = [(f.exception(), ids) for f, ids in shipped]
        refused = [ids for error, ids in failures if isinstance(error, RedisFull)]
        self.written.extend(i for error, ids in failures if error is None for i in ids)
        first = next((error for error, _ in failures if error is not None), None)
        if isinstance(first, RedisFull):
            raise self._refused(first, [i for ids in refused for i in ids]) from None
        if first is not None:
            raise first

    def _refused(self, full: RedisFull, ids: list[str]) -> RedisFull:
        """``full``, saying which tasks of the batch were written and which were not."""
        written, known = list(self.written), {*self.written, *ids}
        unsent = [i for chunk in self.tasks.values() for i in _ids(chunk) if i not in known]
        refused = ids + unsent
        error = RedisFull(
            f"{full} ({len(written)} task(s) of this batch went in before, {len(refused)} "
            "did not: see .accepted and .refused)"
        )
        error.accepted, error.refused = written, refused
        return error


_sender_pool: ThreadPoolExecutor | None = None


def _sender() -> ThreadPoolExecutor:
    """This process's sender thread (one: chunks are written in the order shipped)."""
    global _sender_pool
    if _sender_pool is None:
        _sender_pool = ThreadPoolExecutor(1, thread_name_prefix="batch-sender")
    return _sender_pool


def _forked() -> None:
    global _sender_pool
    _sender_pool = None  # a forked child inherits the object, not its thread


os.register_at_fork(after_in_child=_forked)


def _publish_now(events: list[tuple[str, str]]) -> None:
    pipe = get_redis().pipeline(transaction=False)
    for channel, message in events:
        pipe.publish(channel, message)
    pipe.execute()


class batch:
    """Send everything published in this block (this thread) in one round trip (a big
    batch: one per ENQUEUE_CHUNK tasks, overlapping). A block inside another one adds
    to the outer one, which sends. (A class, not a generator: every send opens one.)"""

    __slots__ = ("current",)

    def __enter__(self) -> None:
        if getattr(_batch, "current", None) is not None:
            self.current = None
        else:
            self.current = _batch.current = Batch()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        current = self.current
        if current is None:
            return
        try:
            if kind is None:
                current.send()
        finally:
            _batch.current = None
            current.wait()  # what was shipped before a failure is written, or raises


def current_batch() -> Batch | None:
    """The ``batch()`` block open in this thread, if any."""
    return getattr(_batch, "current", None)


#: Turns task-sent events into (channel, message) pairs to publish: one, or grouped.
EncodeEvents = Callable[[list[dict[str, Any]]], list[tuple[str, str]]]


def put_task(
    keys: Keys,
    queue: str,
    step: int,
    message: dict[str, Any],
    status_ttl: int,
    sent_event: dict[str, Any] | None = None,
    encode: EncodeEvents | None = None,
    claim: tuple[str, bytes | str] | None = None,
) -> bool:
    """Queue a Celery task message (kombu's envelope) on ``queue`` at priority ``step``,
    or in the delay store when its due time is ahead; a first send records its status
    (kept ``status_ttl`` seconds while the task is not over), unless its header says
    nobody watches it (``h.UNTRACKED``). Its task-sent event, if any, is published by
    the same script call (``encode`` makes it a message; in a batch, the batch's events
    are encoded together, grouped). With ``claim`` (a landing
    list and the message as it lies there: a foreign message being adopted), the message
    is put only if it is still there, taken off it in the same step; False if not."""
    headers = message["headers"]
    task_id = headers["id"]
    due = headers.get(h.DUE_AT)
    due = float(due) if due is not None and float(due) > time.time() else None
    if due is not None:
        headers["eta"] = None  # the worker gets it when due: no ETA to hold in memory
    # The worker's task removes its message from the unacknowledged set by this tag,
    # in the step that stores its result (lua/finish.lua).
    headers[h.DELIVERY_TAG] = message["properties"]["delivery_tag"]
    list_key = keys.queue(queue, step)
    doorbell = keys.doorbell(queue)
    retry = bool(headers.get("retries"))  # its record stays what the worker made it
    if retry or headers.get(h.UNTRACKED):
        first, fields = "", []
    else:
        first = SCHEDULED if due else QUEUED
        fields = status_fields(headers, queue, step)
    counted = "" if retry else counter_suffix(step, headers["task"])
    status_key = keys.status(task_id)
    entry = json.dumps([list_key, to_json(message), status_key, doorbell]) if due else ""
    record = Record(
        (list_key, doorbell, status_key), status_ttl,
        [task_id, "" if due else to_json(message), due or "", entry, first, counted,
         len(fields) // 2, *fields],
    )  # fmt: skip
    open_batch = current_batch()
    if open_batch is not None and claim is None:
        open_batch.add(keys, record)
        if sent_event is not None:
            open_batch.sent.append(sent_event)
            open_batch.encode_sent = encode
        return True
    call_keys, args = _enqueue_call(keys, [record], status_ttl, claim)
    with_events = sent_event is not None and encode is not None and listeners.task_events.open()
    if with_events and sent_event is not None and encode is not None:
        _with_events(args, encode([sent_event]))
    reply = script("enqueue")(call_keys, args)
    if with_events:
        listeners.task_events.heard(int(reply[1]))
    return bool(reply[0])


def to_json(envelope: dict[str, Any]) -> str:
    """A message envelope as JSON text: orjson (ten times kombu's encoder here), or
    kombu's encoder for what orjson does not take."""
    try:
        return orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(dumps(envelope))


def publish(channels: list[str], payload: str, task_event: bool = False) -> None:
    """Publish an event (Celery's task-sent…) with the current batch, if any; in a
    worker through its write-behind; else at once on our long-lived client (kombu would
    make a new client for each). A ``task_event`` goes out only while someone listens
    (``listeners.py``)."""
    if task_event and not listeners.task_events.open():
        return

    def send(pipe: Any) -> None:
        for channel in channels:
            pipe.publish(channel, payload)

    def heard(replies: list[Any]) -> None:
        listeners.task_events.heard(sum(int(n) for n in replies))

    open_batch, writes = current_batch(), writebehind.here()
    if open_batch is not None:
        open_batch.events.extend((channel, payload) for channel in channels)
    elif writes is not None:
        writes.add(send, heard if task_event else None)
    else:
        pipe = get_redis().pipeline(transaction=False)
        send(pipe)
        replies = pipe.execute()
        if task_event:
            heard(replies)


#: First statuses a send records (``TaskStatus`` values).
QUEUED, SCHEDULED = TaskStatus.QUEUED.value, TaskStatus.SCHEDULED.value


def status_fields(headers: dict[str, Any], queue: str, step: int) -> list[Any]:
    """What a task's status record says of it from the start, as field, value pairs."""
    fields: list[Any] = [
        RecordField.TYPE,
        headers["task"],
        RecordField.PRIORITY,
        step,
        RecordField.QUEUE,
        queue,
    ]
    for name, header in FROM_HEADERS:
        value = headers.get(header)
        if value is not None:
            fields += (name, str(value))
    return fields


class Record(NamedTuple):
    """One task of an enqueue call: its keys (queue list, doorbell, status), how long its
    record lives while not over, and its arguments, in lua/enqueue.lua's order."""

    keys: tuple[str, str, str]
    status_ttl: int
    args: list[Any]


def _ids(records: list[Record]) -> list[str]:
    return [str(record.args[0]) for record in records]


def _enqueue_call(
    keys: Keys,
    records: list[Record],
    status_ttl: int,
    claim: tuple[str, bytes | str] | None = None,
) -> tuple[list[Any], list[Any]]:
    """KEYS and ARGV of lua/enqueue.lua for ``records``, publishing nothing
    (``_with_events`` adds events); with ``claim`` (landing list, message), only if the
    message is still on that list, taken from it in the same step."""
    landing, raw = claim or (keys.task_stats(), "")
    call_keys = [keys.task_stats(), keys.delayed(), keys.delayed_messages(), landing]
    args = [time.time(), status_ttl, DOORBELL_TOKENS, raw, 0]
    for record in records:
        call_keys.extend(record.keys)
        args.extend(record.args)
    return call_keys, args


def _with_events(args: list[Any], events: list[tuple[str, str]]) -> None:
    """Make the enqueue call with ``args`` publish ``events`` after queueing its tasks."""
    args[_EVENTS_ARG : _EVENTS_ARG + 1] = [len(events), *(x for pair in events for x in pair)]


#: Where enqueue.lua's ARGV says how many events follow (0-based).
_EVENTS_ARG = 4
