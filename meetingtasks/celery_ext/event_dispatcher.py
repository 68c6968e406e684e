"""Celery's event dispatcher, publishing monitoring events straight to Redis.

Why: in a worker's main process Celery's dispatcher spent a third of the process's time
per task on kombu's Producer (declaring the exchange again, encoding with kombu's JSON,
the virtual exchange's fan-out) for three events per task. The event envelope is fixed
(what kombu's Redis transport publishes: ``envelopes.py``), so it is built and published
through ``store.queueing.publish`` (the worker's write-behind, or at once);
``tests/test_messages.py`` compares it with what Celery's dispatcher sends. Events and
batching, buffering while offline and the clock stay Celery's.

A task event nobody would hear (``store/listeners.py``) is not even built: in an ``ai``
worker's 500 threads, building, buffering and flushing them under the dispatcher's one
mutex cost more than the tasks' own Redis calls.

Private names of Celery 5.7 relied on (``tests/test_private_api.py`` checks each):
``EventDispatcher._publish`` (overridden), ``EventDispatcher._outbound_buffer``.
"""

from __future__ import annotations

from typing import Any

from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher as CeleryEventDispatcher
from celery.utils.time import utcoffset

from meetingtasks.base.keys import get_keys
from meetingtasks.celery_ext.envelopes import event_channel, event_message
from meetingtasks.store import listeners, queueing


class EventDispatcher(CeleryEventDispatcher):
    """Celery's event dispatcher, publishing straight to Redis (the module says why)."""

    def send(self, type: str, *args: Any, **fields: Any) -> Any:
        if type.startswith("task-") and not listeners.task_events.open():
            return None  # nobody listens: not built, buffered or flushed
        return super().send(type, *args, **fields)

    def _publish(
        self, event: Any, producer: Any, routing_key: str, retry: bool = False,
        retry_policy: Any = None, utcoffset: Any = utcoffset,
    ) -> None:  # fmt: skip
        if producer is None:
            return
        try:
            message = event_message(event, routing_key, self.headers, self.delivery_mode)
            channel = event_channel(self.app, get_keys(), routing_key)
            # Task events only while someone listens (store/listeners.py).
            queueing.publish(
                [channel], queueing.to_json(message), task_event=routing_key.startswith("task.")
            )
        except Exception:
            if not self.buffer_while_offline:
                raise
            self._outbound_buffer.append((event, routing_key))


class Events(CeleryEvents):
    """Celery's events with our dispatcher (``Celery(events=...)``)."""

    dispatcher_cls = "meetingtasks.celery_ext.event_dispatcher:EventDispatcher"
