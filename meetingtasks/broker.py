"""Our kombu transport: kombu's Redis transport with two things Celery on Redis lacks.

1. **Durable delays.** Celery keeps a task sent with ``countdown``/``eta`` in a worker's
   memory until it is due, and Redis delivers it again to another worker whenever the
   delay outlasts the visibility timeout (duplicates, memory growth, loss on restart).
   Here a message whose due time (header ``mt_due_at``) is still ahead is not pushed on
   its queue: it goes to the delay store in Redis, and the scheduler loop queues it when
   due. Retry backoffs take the same path.
2. **Owned unacknowledged messages.** Kombu records each message a worker took (ack
   emulation) but not *which* worker took it, so a worker killed with -9 leaves its
   messages invisible until the visibility timeout (an hour by default). Here each one is
   recorded with the id of the consumer holding it; the scheduler's recoverer gives back
   the messages of a consumer whose heartbeat stopped within seconds.

Select it with ``broker_transport`` (celeryconfig.py does); URLs stay ``redis://``,
``rediss://`` or ``sentinel://``.
"""

from __future__ import annotations

import time
from typing import Any

from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from meetingtasks.keys import UNACKED_OWNER, get_keys
from meetingtasks.store import delayed
from meetingtasks.task import DUE_AT_HEADER

#: Id of the worker process consuming through this transport (set by the worker's
#: heartbeat bootstep before it consumes); None in processes that only publish.
consumer_id: str | None = None


class DelayingChannelMixin:
    """Diverts messages that are not due yet to the delay store."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        headers = message.get("headers") or {}
        due = headers.get(DUE_AT_HEADER)
        if due is None or float(due) <= time.time():
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        # The worker gets it when it is due: no ETA for it to hold in memory.
        headers["eta"] = None
        step = self.priority(self._get_message_priority(message, reverse=False))  # type: ignore[attr-defined]
        keys = get_keys()
        delayed.add(keys, headers["id"], float(due), keys.queue(queue, step), dumps(message))


class OwnedQoS(kombu_redis.QoS):  # type: ignore[misc]
    """Kombu's ack emulation, plus who holds each unacknowledged message."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if consumer_id is None:
            super().append(message, delivery_tag)
            return
        # kombu's own append, with the owner written in the same pipeline.
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}).hset(
                self.unacked_key,
                delivery_tag,
                dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
            ).hset(UNACKED_OWNER, delivery_tag, consumer_id).execute()
        kombu_redis.virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        return super()._remove_from_indices(delivery_tag, pipe).hdel(UNACKED_OWNER, delivery_tag)


class Channel(DelayingChannelMixin, kombu_redis.Channel):  # type: ignore[misc]
    QoS = OwnedQoS


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelChannel(DelayingChannelMixin, kombu_redis.SentinelChannel):  # type: ignore[misc]
    QoS = OwnedQoS


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel


TRANSPORTS = {
    "meetingtasks.broker:Transport": "redis",
    "meetingtasks.broker:SentinelTransport": "sentinel",
}
# Connection URLs (Celery's banner, Flower's broker page) keep showing redis:// or
# sentinel:// instead of our class path: kombu maps names for display through this table.
Connection.resolve_aliases.update(TRANSPORTS)


def transport_for(url: str) -> str:
    """The ``broker_transport`` setting for a broker URL."""
    scheme = "sentinel" if url.startswith("sentinel://") else "redis"
    return next(path for path, name in TRANSPORTS.items() if name == scheme)
