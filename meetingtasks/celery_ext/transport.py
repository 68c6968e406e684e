"""Our kombu transport: kombu's Redis transport with what Celery on Redis lacks.

1. **Status with every message.** A task message goes on its queue in the same Lua
   step that records the task's first status (``queued``), so every process can follow
   it from the start at no extra round trip (``store/queueing.py``).
2. **Durable delays.** Celery keeps a task sent with ``countdown``/``eta`` in a worker's
   memory until it is due, and Redis delivers it again to another worker whenever the
   delay outlasts the visibility timeout (duplicates, memory growth, loss on restart).
   Here a message whose due time (header ``mt_due_at``) is still ahead is not pushed on
   its queue: it goes to the delay store in Redis, and a scheduler loop (every worker
   runs them) queues it when due. Retry backoffs take the same path.
3. **Atomic, owned taking of messages.** Kombu pops a message with BRPOP and records it
   as unacknowledged in a second command, without saying *which* worker took it: a
   worker killed between the two loses the message, and one killed later leaves it
   invisible until the visibility timeout (an hour by default). Here a worker takes a
   message and records it with its consumer id in one Lua step (``store/lua/fetch.lua``;
   a worker with several idle pool processes takes as many messages in that one step),
   so any worker's recoverer can give back the messages of a consumer whose
   heartbeat stopped, within seconds (``recovery.py``). An idle worker blocks on the
   queues' doorbell lists (a token is pushed with each message) instead of on BRPOP.

Select it with ``broker_transport`` (celeryconfig.py does); URLs stay ``redis://``,
``rediss://`` or ``sentinel://``.

Private names of kombu 5.7 relied on (``tests/test_private_api.py`` checks each):
- ``kombu.transport.redis.Channel``: ``_brpop_start``, ``_brpop_read``, ``_put``,
  ``_put_fanout``, ``_size`` and ``_queue_bind`` (overridden); ``_q_for_pri``,
  ``_queue_cycle``, ``_in_poll``, ``_flush_brpop_reauth``, ``_get_message_priority``,
  ``_get_publish_topics``, ``_fanout_queues`` (used);
- ``kombu.transport.redis.QoS``: ``_remove_from_indices``, ``restore_visible``,
  ``restore_unacked`` and ``reject`` (overridden), ``_delivered``;
- ``kombu.transport.virtual.Transport._deliver``;
- ``kombu.Connection.resolve_aliases`` (extended, for display, in ``BrokerConnection``
  only) and the connection's ``transport_cls`` (set again after ``switch``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from functools import cached_property
from queue import Empty
from time import monotonic
from typing import Any

import orjson
from kombu import Connection
from kombu.serialization import prepare_accept_content
from kombu.transport import redis as kombu_redis
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

from meetingtasks.base import headers as h
from meetingtasks.base.keys import get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import MONITOR_SLACK
from meetingtasks.policies import message_check, poison, tracking
from meetingtasks.store import get_redis, malformed, queueing, script, writebehind
from meetingtasks.store import held as held_store
from meetingtasks.store.sentinel import PrimaryConnection, is_sentinel

log = logging.getLogger(__name__)


class _Consumer:
    """Who this process consumes as: set by ``consume_as`` in a worker process, unset in
    processes that only publish. Each broker connection takes a new id ``{base}/{n}`` (a
    new generation after every reconnect) and tells ``on_new``."""

    base: str | None = None
    current: str | None = None
    on_new: Callable[[str | None, str], None] | None = None
    generations = itertools.count(1)

    @classmethod
    def owner_of(cls, transport: Any) -> str | None:
        """The consumer id the channels of ``transport`` (one connection) fetch as.

        One per connection, not per channel: Celery's worker consumes tasks, mingle's
        replies, gossip and remote control on channels of one connection, and the
        heartbeat keeps one id alive. Were each channel its own consumer, the tasks'
        channel would hold its messages under an id the heartbeat no longer renews, and
        any recoverer would give back tasks still running."""
        if cls.base is None:
            return None
        if transport.owner_id is None:
            previous, transport.owner_id = cls.current, f"{cls.base}/{next(cls.generations)}"
            cls.current = transport.owner_id
            if cls.on_new is not None:
                cls.on_new(previous, transport.owner_id)
        return str(transport.owner_id)


def consume_as(base: str, on_new_consumer: Callable[[str | None, str], None]) -> None:
    """Make this process a consumer whose channels take ids ``{base}/{n}``;
    ``on_new_consumer(previous id, new id)`` runs as each new one starts."""
    _Consumer.base, _Consumer.on_new = base, on_new_consumer


def current_consumer() -> str | None:
    """The id of this process's current consumer (None before it consumes)."""
    return _Consumer.current


#: Most messages one fetch takes (a worker with many free pool processes).
FETCH_MOST = 64


#: The transport option naming the content types a worker accepts (the app's
#: ``accept_content``, which the transport cannot read from the app itself).
ACCEPT_CONTENT_OPTION = "meetingtasks_accept_content"


class QueueingChannelMixin:
    """Puts task messages on their queue with their status, or in the delay store;
    takes them atomically, recording the consumer holding each."""

    owner_id: str | None = None
    _fetch_commands: dict[tuple[str, ...], Any]
    _waiting = False  # blocked on the doorbells, not taking a message
    _taken_from: list[str] = []

    @cached_property
    def _status_ttl(self) -> int:
        """Seconds a task's record lives while the task is not over (read once)."""
        return get_settings().status_ttl

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self._fetch_commands = {}
        # A fanout queue (remote control's) is read over Pub/Sub, never fetched: its
        # channel needs no id, nor a connection of its own (gevent's remote control) one.
        if self.owner_id is None and queue not in self._fanout_queues:  # type: ignore[attr-defined]
            self.owner_id = _Consumer.owner_of(self.connection)  # type: ignore[attr-defined]
        return super().basic_consume(queue, *args, **kwargs)  # type: ignore[misc]

    # -- a worker that starts while Redis is full ---------------------------------------
    # At maxmemory Redis refuses every command in a MULTI and every command that may
    # grow memory, even one that would change nothing. A worker restarted then must still
    # start and drain, so its declarations read without a transaction and do without a
    # binding Redis refused.

    def _size(self, queue: str) -> int:
        """Messages waiting on ``queue`` (kombu's sum over its priority lists, in a plain
        pipeline rather than a transaction)."""
        with self.conn_or_acquire() as client:  # type: ignore[attr-defined]
            pipe = client.pipeline(transaction=False)
            for step in self.priority_steps:  # type: ignore[attr-defined]
                pipe.llen(self._q_for_pri(queue, step))  # type: ignore[attr-defined]
            return sum(size for size in pipe.execute() if isinstance(size, int))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """kombu's binding, which a full Redis may refuse: the worker goes on without
        it (our send path puts messages on the queue's lists by name, and kombu writes
        the binding again at the next connection) rather than die unable to drain."""
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)  # type: ignore[misc]
        except OutOfMemoryError:
            log.warning(
                "Redis is at its maxmemory: the binding of %s to %s is written at the "
                "next connection", queue, exchange,
            )  # fmt: skip

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Send the next fetch (or, when the queues were empty, the doorbell wait)."""
        if self.owner_id is None:  # not a worker: kombu's BRPOP
            return super()._brpop_start(timeout)  # type: ignore[misc]
        queues = self._queue_cycle.consume(len(self.active_queues))  # type: ignore[attr-defined]
        if not queues:
            return None
        if self._waiting:
            bells = self._fetch_command(tuple(queues))[2]
            wait = self.brpop_timeout if timeout is None else timeout  # type: ignore[attr-defined]
            command: list[Any] = ["BRPOP", *bells, wait or 0]
        else:
            head, tail, _, self._taken_from = self._fetch_command(tuple(queues))
            command = [*head, time.time(), *tail, self._room(), h.UNTRACKED, h.SESSION,
                       h.REQUEST, get_keys().session_channel("")]  # fmt: skip
        self._in_poll = self.client.connection  # type: ignore[attr-defined]
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)  # type: ignore[attr-defined]
        return None

    def _fetch_command(
        self, queues: tuple[str, ...]
    ) -> tuple[list[Any], list[Any], list[str], list[str]]:
        """The parts of the fetch for ``queues`` that do not change between fetches:
        the command before and after its time, the doorbells, the queue of each list
        (built once per queue order this channel consumes in)."""
        if queues not in self._fetch_commands:
            self._fetch_commands[queues] = self._build_fetch_command(queues)
        return self._fetch_commands[queues]

    def _build_fetch_command(
        self, queues: tuple[str, ...]
    ) -> tuple[list[Any], list[Any], list[str], list[str]]:
        keys = get_keys()
        bells = [keys.doorbell(queue) for queue in queues]
        order = [(queue, step) for step in self.priority_steps for queue in queues]  # type: ignore[attr-defined]
        lists = [keys.queue(queue, step) for queue, step in order]
        held = [keys.held(queue, str(self.owner_id)) for queue, _ in order]
        running = [keys.deadlines(), keys.malformed()]
        head = ["EVALSHA", script("fetch").sha, 2 * len(lists) + 2 + len(bells),
                *lists, *held, *running, *bells, len(lists)]  # fmt: skip
        tail = [self.owner_id, keys.status_prefix(), keys.cancelled_prefix(),
                self._status_ttl, MONITOR_SLACK, malformed.MALFORMED_KEPT]  # fmt: skip
        return head, tail, bells, [queue for queue, _ in order]

    def _room(self) -> int:
        """How many messages one fetch may take: the free prefetch slots (Celery's
        prefetch count is concurrency x multiplier), so a worker never holds a message it
        cannot start and strict priority holds; at most FETCH_MOST."""
        room = self.qos.can_consume_max_estimate()  # type: ignore[attr-defined]
        return max(1, min(room or 1, FETCH_MOST))

    def _brpop_read(self, **options: Any) -> bool:
        """Deliver the messages fetched, or switch between fetching and waiting."""
        if self.owner_id is None:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        client = self.client  # type: ignore[attr-defined]
        try:
            command = "BRPOP" if self._waiting else "EVALSHA"
            try:
                reply = client.parse_response(client.connection, command, **options)
            except self.connection_errors:  # type: ignore[attr-defined]
                client.connection.disconnect()
                raise
            except NoScriptError:  # Redis restarted and forgot it: load, then fetch again
                client.script_load(script("fetch").script)
                raise Empty() from None
            except ResponseError as exc:
                # Not expected (fetch.lua sets unreadable entries aside), but a consumer
                # that dies here stops the worker taking anything: log it, wait on the
                # doorbells for a turn instead of spinning, and fetch again.
                if self._waiting:
                    raise
                log.error("fetching from %s failed: %s", self._taken_from, exc)
                self._waiting = True
                raise Empty() from None
            if self._waiting or not reply:
                self._waiting = not self._waiting
                raise Empty()
            for index, raw in zip(reply[::2], reply[1::2], strict=True):
                if int(index) == 0:  # set aside by fetch.lua: its task ends failed
                    poison.report_set_aside(orjson.loads(raw))
                    continue
                queue = self._taken_from[int(index) - 1]
                self._queue_cycle.rotate(queue)  # type: ignore[attr-defined]
                self._deliver_or_set_aside(raw, queue)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()  # type: ignore[attr-defined]

    def _deliver_or_set_aside(self, raw: bytes, queue: str) -> None:
        """Hand Celery a message it can make a task of; set aside one it cannot, so that
        nothing a producer puts on a queue stops the worker (message_check.py)."""
        checked = message_check.check(raw, self._accepted())
        if isinstance(checked, message_check.Refused):
            poison.set_aside(
                raw, checked.reason, f"queue {queue}", task_id=checked.task_id,
                delivery_tag=checked.delivery_tag, held=get_keys().held(queue, str(self.owner_id)),
            )  # fmt: skip
            return
        # Where the message is held until its run ends (the run's end releases it).
        checked["headers"][h.HELD] = get_keys().held(queue, str(self.owner_id))
        try:
            self.connection._deliver(checked, queue)  # type: ignore[attr-defined]
        except Exception as exc:  # Celery could not take it either: never fatal
            log.exception("the worker could not take a message from %s", queue)
            poison.set_aside(
                raw, f"the worker could not take it: {exc!r}", f"queue {queue}",
                task_id=checked["headers"]["id"],
                delivery_tag=checked["properties"]["delivery_tag"],
                held=checked["headers"][h.HELD],
            )  # fmt: skip

    def _accepted(self) -> set[str]:
        """The content types the app accepts (``ACCEPT_CONTENT_OPTION``), as kombu
        compares them."""
        accepted: set[str] | None = getattr(self, "_accepted_types", None)
        if accepted is None:
            options = self.connection.client.transport_options  # type: ignore[attr-defined]
            accepted = prepare_accept_content(options.get(ACCEPT_CONTENT_OPTION, ["json"]))
            self._accepted_types = accepted
        return accepted

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        headers = message.get("headers") or {}
        task_id, task_type = headers.get("id"), headers.get("task")
        if task_id is None or task_type is None:  # not a Celery task message
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        kwargs.pop("_publish_batch", None)  # queueing.batch() is our batching
        step = self.priority(self._get_message_priority(message, reverse=False))  # type: ignore[attr-defined]
        if not tracking.watched(headers):
            headers[h.UNTRACKED] = 1
        queueing.put_task(get_keys(), queue, step, message, self._status_ttl)

    def _put_fanout(self, exchange: str, message: Any, routing_key: str, **kwargs: Any) -> None:
        """Events (task-sent…) go out as ``queueing.publish`` says."""
        topics = self._get_publish_topics(exchange, routing_key)  # type: ignore[attr-defined]
        queueing.publish([get_keys().prefix + topic for topic in topics], queueing.to_json(message))


class OwnedQoS(kombu_redis.QoS):
    """Kombu's ack emulation; in a worker, over the consumer's own held hashes
    (``Keys.held``) instead of kombu's unacknowledged set."""

    def ack(self, delivery_tag: str) -> None:
        """In a worker, the Redis side waits for the write-behind flush: a tracked task's
        own result write already released the message, so this mostly releases those of
        tasks nobody watches (see store/writebehind.py)."""
        if self.channel.owner_id is None:
            super().ack(delivery_tag)
            return
        held = self._held(delivery_tag)
        writes = writebehind.here()
        if writes is None:
            held_store.release(get_redis().pipeline(), [(held, delivery_tag)]).execute()
        else:
            writes.add_to_group(held_store.release, (held, delivery_tag))
        kombu_redis.virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """A rejected message goes back to the front of its queue (``requeue``: a task
        whose pool process died under it, say), with a doorbell token, or is released."""
        if self.channel.owner_id is None:
            super().reject(delivery_tag, requeue)
            return
        held = self._held(delivery_tag)
        if requeue and held:
            held_store.give_back_tags(get_keys(), held, [delivery_tag])
        else:
            held_store.release(get_redis().pipeline(), [(held, delivery_tag)]).execute()
        kombu_redis.virtual.QoS.ack(self, delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.owner_id is None:
            super().append(message, delivery_tag)
        else:  # fetch.lua recorded it in Redis already; only kombu's memory is left
            kombu_redis.virtual.QoS.append(self, message, delivery_tag)

    def _held(self, delivery_tag: str) -> str:
        """The hash holding a message this channel delivered (the transport named it in
        the message's headers)."""
        message = self._delivered.get(delivery_tag)
        headers = getattr(message, "headers", None) or {}
        return str(headers.get(h.HELD) or "")

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        """Kombu's visibility-timeout restore (of kombu's own set: our workers hold their
        messages in their held hashes, which recovery watches) takes a lock (SET NX) that
        Redis at its maxmemory refuses: then it waits for its next pass instead of failing
        the worker."""
        try:
            return super().restore_visible(*args, **kwargs)
        except OutOfMemoryError:
            log.warning("Redis is at maxmemory: the visibility-timeout restore waits a pass")
            return None
        except Exception:  # an entry kombu cannot read
            log.warning("kombu's visibility-timeout restore failed; it tries again", exc_info=True)
            return None

    def restore_unacked(self, client: Any = None) -> Any:
        """What a closing channel delivered and nobody acknowledged (prefetched, not
        started) goes back to the front of its queue, with a doorbell token. A broker
        connection lost at that moment (Celery would count the error as fatal) leaves it
        held under this consumer's id: it comes back through recovery (the worker's new
        consumer, or another worker)."""
        if self.channel.owner_id is None:
            return super().restore_unacked(client)
        by_hash: dict[str, list[str]] = {}
        for tag in list(self._delivered):
            by_hash.setdefault(self._held(tag), []).append(tag)
        self._delivered.clear()
        try:
            for key, tags in by_hash.items():
                if key:
                    held_store.give_back_tags(get_keys(), key, tags)
        except Exception:
            log.warning("could not give back unacknowledged messages now; recovery will")
        return None

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        if self.channel.owner_id is None:
            return super()._remove_from_indices(delivery_tag, pipe)
        # Kombu's reject (requeue) and visibility paths: the message is held by us.
        return held_store.release(pipe if pipe is not None else get_redis().pipeline(),
                        [(self._held(delivery_tag), delivery_tag)])  # fmt: skip


class Channel(QueueingChannelMixin, kombu_redis.Channel):  # type: ignore[misc]
    QoS = OwnedQoS


class Transport(kombu_redis.Transport):
    Channel = Channel
    #: The consumer id of this connection's channels in a worker (``_Consumer.owner_of``).
    owner_id: str | None = None


class SentinelChannel(QueueingChannelMixin, kombu_redis.SentinelChannel):  # type: ignore[misc]
    QoS = OwnedQoS
    #: Asks the sentinels for the primary on every reconnect (store/sentinel.py).
    connection_class = PrimaryConnection


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
    owner_id: str | None = None


#: Our transport for each of kombu's URL schemes for Redis.
TRANSPORTS = {
    "redis": "meetingtasks.celery_ext.transport:Transport",
    "rediss": "meetingtasks.celery_ext.transport:Transport",
    "sentinel": "meetingtasks.celery_ext.transport:SentinelTransport",
}


class BrokerConnection(Connection):
    """The app's kombu connection (``MeetingTasksApp``'s ``amqp.Connection``): kombu's,
    keeping our transport when it fails over to the next URL of its list.

    ``Connection.switch`` (a Sentinel URL is such a list, one URL per sentinel) takes the
    transport from the next URL's scheme again, ignoring the one the connection was made
    with: a worker would run on kombu's own transport from its first failover on (BRPOP,
    no owned fetch: the loss window above). Kombu's global table of schemes is left
    alone, so every other Celery app and kombu connection of the process keeps kombu's
    transport.
    """

    #: Our class paths shown as their scheme (Celery's banner, Flower's broker page):
    #: ``redis`` for the class that also serves ``rediss`` (TLS shows in the URL's port
    #: and options, as with kombu's own).
    resolve_aliases = {
        **Connection.resolve_aliases,
        **{path: scheme for scheme, path in reversed(TRANSPORTS.items())},
    }

    def switch(self, conn_str: str) -> None:
        ours = isinstance(self.transport_cls, str) and self.transport_cls in TRANSPORTS.values()
        super().switch(conn_str)
        if ours and self.transport_cls in TRANSPORTS:
            self.transport_cls = TRANSPORTS[self.transport_cls]


def transport_for(url: str) -> str:
    """The ``broker_transport`` setting for a broker URL."""
    return TRANSPORTS["sentinel" if is_sentinel(url) else "redis"]
