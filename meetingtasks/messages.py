"""Celery task messages (protocol 2) and their task-sent events, built directly.

Why our own: ``send_task`` costs about half a millisecond per task here, nearly all of
it generic machinery the dispatcher does not need: kombu's Producer declares the queue
again and wraps each publish in retry logic, Celery's builder takes a safe repr of the
arguments, and the task-sent event goes out through a second Producer. The message
format is fixed and documented (Celery's "Message Protocol v2"), so the dispatcher
builds it here and queues it through the same ``store.queueing`` step as the
transport; ``tests/test_messages.py`` checks what is built here against what
``send_task`` queues, field by field, so the two paths cannot drift apart.
"""

from __future__ import annotations

import base64
import functools
import os
import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher as CeleryEventDispatcher
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

from meetingtasks import ids
from meetingtasks.headers import DUE_AT
from meetingtasks.keys import Keys, get_keys
from meetingtasks.store import queueing
from meetingtasks.submission import Payload

#: Celery's limit on the argument reprs shown by Flower and the logs.
REPR_MAX = 1024
#: The third element of Celery's body: no callbacks, errbacks, chain or chord.
_EMBED = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
_SENT = "task-sent"
#: Celery's exchange of monitoring events.
EVENT_EXCHANGE = "celeryev"


def task_message(
    app: Celery,
    task_id: str,
    name: str,
    payload: Payload,
    queue: str,
    priority: int,
    time_limits: tuple[float | None, float | None],
    expires: float | None,
    headers: dict[str, Any],
) -> dict[str, Any]:
    """The kombu envelope of one task message, as ``send_task`` would queue it.

    ``payload`` is what ``submission.check_payload`` accepted (its JSON becomes the
    body), ``time_limits`` is (hard, soft) in seconds, ``expires`` seconds from now.
    """
    body = f"{payload.json[:-1]}, {_EMBED}]".encode()
    task_headers = {
        "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None,
        "expires": _iso_in(expires), "group": None, "group_index": None, "retries": 0,
        "timelimit": list(time_limits), "root_id": task_id, "parent_id": None,
        "argsrepr": repr(payload.args)[:REPR_MAX],
        "kwargsrepr": repr(payload.kwargs)[:REPR_MAX], "origin": _origin(),
        "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {}, **headers,
    }  # fmt: skip
    properties = {
        "correlation_id": task_id, "reply_to": app.thread_oid, "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue}, "priority": priority,
    }  # fmt: skip
    if expires is not None:  # kombu's message TTL, in milliseconds
        properties["expiration"] = str(int(expires * 1000))
    return _envelope(body, task_headers, properties)


def sent_event(app: Celery, message: dict[str, Any]) -> dict[str, Any]:
    """The task-sent event Celery publishes for ``message`` (Flower lists it)."""
    fields = sent_event_fields(app, message)
    return event_message(fields, "task.sent", {"hostname": fields["hostname"]}, delivery_mode=1)


def sent_events(app: Celery, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The task-sent events of many messages as one ``task.multi`` event, as a Celery
    worker groups its task events (Celery's event receivers, Flower's too, take both)."""
    return event_message(
        [sent_event_fields(app, message) for message in messages], "task.multi",
        {"hostname": _origin()}, delivery_mode=1,
    )  # fmt: skip


def sent_event_fields(app: Celery, message: dict[str, Any]) -> dict[str, Any]:
    headers = message["headers"]
    routing_key = message["properties"]["delivery_info"]["routing_key"]
    return {
        "hostname": _origin(), "utcoffset": utcoffset(), "pid": os.getpid(),
        "clock": app.clock.forward(), "uuid": headers["id"], "root_id": headers["root_id"],
        "parent_id": None, "name": headers["task"], "args": headers["argsrepr"],
        "kwargs": headers["kwargsrepr"], "retries": 0, "eta": _iso_at(headers.get(DUE_AT)),
        "expires": headers["expires"], "queue": routing_key, "exchange": "",
        "routing_key": routing_key, "timestamp": time.time(), "type": _SENT,
    }  # fmt: skip


def event_message(
    body: Any, routing_key: str, headers: dict[str, Any], delivery_mode: int
) -> dict[str, Any]:
    """The kombu envelope of a monitoring event (or of a list of them, ``task.multi``)."""
    properties = {
        "delivery_mode": delivery_mode,
        "delivery_info": {"exchange": EVENT_EXCHANGE, "routing_key": routing_key},
        "priority": 0,
    }
    return _envelope(queueing.to_json(body).encode(), dict(headers), properties)


@functools.cache
def event_channel(app: Celery, keys: Keys, routing_key: str) -> str:
    """The Pub/Sub channel of monitoring events with ``routing_key``, named as kombu's
    transport names it."""
    with app.connection_for_write() as connection:
        topic = connection.default_channel._get_publish_topics(EVENT_EXCHANGE, routing_key)[0]
    return keys.prefix + topic


class EventDispatcher(CeleryEventDispatcher):  # type: ignore[misc]
    """Celery's event dispatcher, publishing straight to Redis.

    Why: in a worker's main process Celery's dispatcher spent a third of the process's
    time per task on kombu's Producer (declaring the exchange again, encoding with
    kombu's JSON, the virtual exchange's fan-out) for three events per task. The event
    envelope is fixed (what kombu's Redis transport publishes), so it is built here and
    published through ``store.queueing.publish`` (the worker's write-behind, or at
    once); ``tests/test_messages.py`` compares it with what Celery's dispatcher sends.
    Events and batching, buffering while offline and the clock stay Celery's.
    """

    def _publish(
        self, event: Any, producer: Any, routing_key: str, retry: bool = False,
        retry_policy: Any = None, utcoffset: Any = utcoffset,
    ) -> None:  # fmt: skip
        if producer is None:
            return
        try:
            message = event_message(event, routing_key, self.headers, self.delivery_mode)
            channel = event_channel(self.app, get_keys(), routing_key)
            queueing.publish([channel], queueing.to_json(message))
        except Exception:
            if not self.buffer_while_offline:
                raise
            self._outbound_buffer.append((event, routing_key))


class Events(CeleryEvents):  # type: ignore[misc]
    """Celery's events with our dispatcher (``Celery(events=...)``)."""

    dispatcher_cls = "meetingtasks.messages:EventDispatcher"


def _envelope(body: bytes, headers: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """What kombu's virtual transport makes of a published message."""
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = ids.uuid4()
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }


def _iso_in(seconds: float | None) -> str | None:
    return None if seconds is None else _iso_at(time.time() + seconds)


def _iso_at(when: float | None) -> str | None:
    """A unix time as Celery writes times in messages and events."""
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat()


def _origin() -> str:
    return _nodename(os.getpid())


@functools.cache
def _nodename(pid: int) -> str:
    """Celery's name for a process that is not a worker (``gen<pid>@<host>``)."""
    return anon_nodename()
