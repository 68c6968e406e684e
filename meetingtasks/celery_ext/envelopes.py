"""The kombu envelopes of task messages and monitoring events, built directly.

What kombu's virtual transport makes of a published message is fixed (base64 body,
content type and encoding, headers, properties with delivery info and tag), so the
send path (``sending.py``) and the event dispatcher (``event_dispatcher.py``) build it
here instead of going
through kombu's Producer, which per message declares its exchange again and wraps the
publish in retry logic. ``tests/test_sending.py`` and ``tests/test_messages.py``
compare what is built here with what Celery and kombu send, field by field.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from celery import Celery

from meetingtasks.base import ids
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.store import queueing

#: Most task-sent events published as one ``task.multi`` event (a batch's).
SENT_EVENTS_GROUPED = 256
#: Celery's exchange of monitoring events.
EVENT_EXCHANGE = "celeryev"


def sent_event_messages(app: Celery, events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(channel, message) pairs that publish task-sent ``events``: one alone as Celery's
    dispatcher sends it, many as ``task.multi`` events of SENT_EVENTS_GROUPED, as a
    Celery worker groups its task events (Celery's receivers, Flower's too, take both)."""
    keys = get_keys()
    if len(events) == 1:
        [event] = events
        message = event_message(event, "task.sent", {"hostname": event["hostname"]}, 1)
        return [(event_channel(app, keys, "task.sent"), queueing.to_json(message))]
    channel = event_channel(app, keys, "task.multi")
    pairs = []
    for start in range(0, len(events), SENT_EVENTS_GROUPED):
        group = events[start : start + SENT_EVENTS_GROUPED]
        message = event_message(group, "task.multi", {"hostname": group[0]["hostname"]}, 1)
        pairs.append((channel, queueing.to_json(message)))
    return pairs


def event_message(
    body: Any, routing_key: str, headers: dict[str, Any], delivery_mode: int
) -> dict[str, Any]:
    """The kombu envelope of a monitoring event (or of a list of them, ``task.multi``)."""
    properties = {
        "delivery_mode": delivery_mode,
        "delivery_info": {"exchange": EVENT_EXCHANGE, "routing_key": routing_key},
        "priority": 0,
    }
    return envelope(queueing.to_json(body).encode(), dict(headers), properties)


def event_channel(app: Celery, keys: Keys, routing_key: str) -> str:
    """The Pub/Sub channel of monitoring events with ``routing_key``, named as kombu's
    transport names it."""
    prefix, keyed = _event_topic(app, keys)
    return prefix + routing_key if keyed else prefix


@functools.cache
def _event_topic(app: Celery, keys: Keys) -> tuple[str, bool]:
    """The events' topic without its routing key, and whether the key ends it (kombu's
    ``fanout_patterns``). Read once from kombu, whose channel needs a connection: an event
    with a routing key not seen before must not wait for the broker (a worker announces
    ``worker-offline`` when it loses it, and kombu retries for seconds)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        first, second = (channel._get_publish_topics(EVENT_EXCHANGE, key)[0] for key in ("a", "b"))
    if first == second:
        return keys.prefix + first, False
    return keys.prefix + first.removesuffix("a"), True


def envelope(body: bytes, headers: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
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
