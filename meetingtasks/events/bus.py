"""EventBus: events between services, over Redis, in one deployment namespace.

``publish(channel, event)`` and ``subscribe(channel_or_pattern, handler)``; whether a
channel is fire-and-forget Pub/Sub or a durable stream is decided by
``EventBusConfig.durable_channels``, the same for publishers and subscribers. Channel
names go through ``meetingtasks.base.keys``, so two deployments (namespaces) on one Redis
never see each other's events.

Lifecycle: ``start()`` begins reading for every subscription (made before or after it);
``stop()`` stops reading, lets handed-out events finish (durable ones are acknowledged),
and closes the connections. A bus used only to publish needs no start(), but its stop()
still closes the connection. Handlers run on threads; an asyncio user bridges with
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any, Self

from meetingtasks.base.channels import validate_channel, validate_name
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import InvalidEvent, StateError
from meetingtasks.events.config import DeliveryMode, EventBusConfig
from meetingtasks.events.counters import Counters
from meetingtasks.events.delivery import Handler, HandlerPool, Subscription
from meetingtasks.events.envelope import Event
from meetingtasks.events.streams import StreamConsumer, consumer_name
from meetingtasks.events.streams import append as append_to_stream
from meetingtasks.store.clients import connect
from meetingtasks.store.subscriber import Subscriber

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, config: EventBusConfig | None = None, *, keys: Keys | None = None):
        self.config = config or EventBusConfig()
        self.keys = keys or get_keys()
        url = self.config.redis_url or get_settings().redis_url
        # The writer rides over a blip with redis-py's retries; stream readers and the
        # Pub/Sub subscriber reconnect in their own loops.
        self._writer = connect(url, self.config.socket_timeout, retry=True)
        self._reader = connect(url, self.config.socket_timeout, retry=False)
        self._pool = HandlerPool(self.config.workers, self.config.max_in_flight)
        self._listener = Subscriber(
            url,
            self._on_pubsub_message,
            backoff=self.config.reconnect_backoff(),
            health_check_interval=self.config.health_check_interval,
            socket_timeout=self.config.socket_timeout,
            name="mt-event-pubsub",
        )
        self._lock = threading.Lock()
        self._topics: dict[tuple[str, bool], list[Subscription]] = {}
        self._consumers: dict[Subscription, StreamConsumer] = {}
        self._stopping = threading.Event()
        self._running = False
        self._closed = False
        self._counters = Counters("published", "invalid")

    # -- publishing ------------------------------------------------------------------------

    def publish(self, channel: str, event: Event) -> None:
        """Send ``event`` to everyone subscribed to ``channel`` (InvalidEvent if either is bad).

        Pub/Sub: delivered to the subscribers connected now. Durable: appended to the
        channel's bounded stream for every consumer group. A Redis outage raises redis'
        ConnectionError after the client's retries: the caller decides what to do.
        """
        validate_channel(channel)
        if not isinstance(event, Event):
            raise InvalidEvent(f"publish takes an Event, not {type(event).__name__}")
        data = event.to_json(self.config.max_event_bytes)
        if self.config.mode_of(channel) is DeliveryMode.DURABLE:
            append_to_stream(
                self._writer, self.keys.event_stream(channel), data, self.config.stream_maxlen
            )
        else:
            self._writer.publish(self.keys.event_channel(channel), data)
        self._counters.add("published")

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        handler: Handler,
        *,
        group: str | None = None,
        consumer: str | None = None,
    ) -> Subscription:
        """Call ``handler(event)`` for each event of ``channel`` (a glob pattern such as
        ``meeting.*`` on Pub/Sub channels); returns the handle ``unsubscribe`` takes.

        On a durable channel the subscription reads as ``consumer`` of consumer ``group``
        (default ``config.group``): groups each get every event, the consumers of one
        group share them. If the bus is running, returns once the subscription is live
        (or ``start_timeout`` passed).
        """
        if not callable(handler):
            raise InvalidEvent(f"handler must be callable, not {type(handler).__name__}")
        is_pattern = validate_channel(channel, allow_pattern=True)
        durable = self.config.mode_of(channel) is DeliveryMode.DURABLE
        if durable and is_pattern:
            raise InvalidEvent(
                f"{channel!r} names durable channels by pattern: streams have no pattern "
                "subscriptions, subscribe to each durable channel by name"
            )
        if not durable:
            if group is not None or consumer is not None:
                raise InvalidEvent(
                    f"{channel!r} is a fire-and-forget channel: group and consumer apply only to "
                    "durable channels (see EventBusConfig.durable_channels)"
                )
            subscription = Subscription(channel, handler, DeliveryMode.PUBSUB, pattern=is_pattern)
            self._add_pubsub(subscription)
            return subscription

        group = group or self.config.group
        if group is None:
            raise InvalidEvent(
                f"{channel!r} is a durable channel: pass group=<your service name> (or set "
                "EventBusConfig.group) so your service gets its own copy of every event"
            )
        subscription = Subscription(
            channel,
            handler,
            DeliveryMode.DURABLE,
            group=validate_name("consumer group", group),
            consumer=validate_name("consumer", consumer) if consumer else consumer_name(),
        )
        self._add_durable(subscription, generated_name=consumer is None)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to this subscription (events it is running still finish)."""
        if subscription.mode is DeliveryMode.DURABLE:
            with self._lock:
                stream_consumer = self._consumers.pop(subscription, None)
            if stream_consumer is not None:
                stream_consumer.stop_reading()
            return
        topic = self._topic(subscription)
        with self._lock:
            subscribers = self._topics.get(topic, [])
            if subscription in subscribers:
                subscribers.remove(subscription)
            if subscribers:
                return
            self._topics.pop(topic, None)
        self._listener.drop(*topic)

    def _topic(self, subscription: Subscription) -> tuple[str, bool]:
        return self.keys.event_channel(subscription.channel), subscription.pattern

    def _add_pubsub(self, subscription: Subscription) -> None:
        topic = self._topic(subscription)
        with self._lock:
            self._check_open()
            self._topics.setdefault(topic, []).append(subscription)
            running = self._running
        name, pattern = topic
        self._listener.want(name, pattern)
        if running and not self._listener.wait_confirmed(
            name, pattern=pattern, timeout=self.config.start_timeout
        ):
            log.warning("subscription to %s not confirmed yet; retrying", subscription.channel)

    def _add_durable(self, subscription: Subscription, *, generated_name: bool) -> None:
        stream_consumer = StreamConsumer(
            subscription,
            self.keys.event_stream(subscription.channel),
            reader=self._reader,
            writer=self._writer,
            pool=self._pool,
            config=self.config,
            generated_name=generated_name,
        )
        with self._lock:
            self._check_open()
            for other in self._consumers:
                if (other.channel, other.group, other.consumer) == (
                    subscription.channel, subscription.group, subscription.consumer,
                ):  # fmt: skip
                    raise InvalidEvent(
                        f"consumer {subscription.consumer!r} of group {subscription.group!r} "
                        f"already reads {subscription.channel!r} here: use another consumer name"
                    )
            self._consumers[subscription] = stream_consumer
            running = self._running
        if running:
            stream_consumer.start()
            if not stream_consumer.wait_ready(self.config.start_timeout):
                log.warning("durable subscription to %s not ready yet", subscription.channel)

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("this EventBus was stopped: create a new one")

    # -- delivery --------------------------------------------------------------------------

    def _on_pubsub_message(self, name: str, pattern: bool, data: str) -> None:
        with self._lock:
            subscribers = list(self._topics.get((name, pattern), ()))
        if not subscribers:
            return
        try:
            event = Event.from_json(data, self.config.max_event_bytes)
        except InvalidEvent as exc:
            self._counters.add("invalid")
            log.warning("dropped an undecodable event on %s: %s", name, exc)
            return
        for subscription in subscribers:
            if not self._pool.submit(partial(subscription.run, event), self._stopping):
                return

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin reading; returns once subscriptions are live or ``start_timeout`` passed
        (if Redis is down the bus keeps reconnecting in the background)."""
        with self._lock:
            self._check_open()
            if self._running:
                return
            self._running = True
            consumers = list(self._consumers.values())
        self._listener.start()
        for stream_consumer in consumers:
            stream_consumer.start()
        if not self.ready(self.config.start_timeout):
            log.warning("event bus started before Redis confirmed every subscription")

    def ready(self, timeout: float) -> bool:
        """True once every subscription is live (Pub/Sub confirmed, consumer groups exist)."""
        deadline = time.monotonic() + timeout
        if not self._listener.wait_ready(timeout):
            return False
        with self._lock:
            consumers = list(self._consumers.values())
        return all(c.wait_ready(max(0.0, deadline - time.monotonic())) for c in consumers)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop reading, let handed-out events finish (durable ones are acknowledged), and
        disconnect. Handlers still running after ``timeout`` seconds are left to finish on
        their own; their durable entries, unacknowledged, are delivered again later."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running, self._running = self._running, False
            consumers = list(self._consumers.values())
        self._stopping.set()
        self._listener.stop()
        if running:
            for stream_consumer in consumers:
                stream_consumer.stop_reading()
        if not self._pool.shutdown(timeout):
            log.warning("event bus stopped with handlers still running after %ss", timeout)
        if running:
            for stream_consumer in consumers:
                stream_consumer.retire()
        self._writer.close()
        self._reader.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """This process's view, JSON-able: totals, Pub/Sub connection, each durable consumer,
        and each handler's delivered/handled/failed counts."""
        with self._lock:
            subscriptions = [s for subs in self._topics.values() for s in subs]
            subscriptions += list(self._consumers)
            consumers = list(self._consumers.values())
        counters = self._counters.snapshot()

        def handler_total(key: str) -> int:
            return sum(s.counters[key] for s in subscriptions)

        def stream_total(key: str) -> int:
            return sum(c.counters[key] for c in consumers)

        return {
            "namespace": self.keys.namespace,
            "running": self._running,
            "published": counters["published"],
            "delivered": handler_total("delivered"),
            "handled": handler_total("handled"),
            "failed": handler_total("failed"),
            "invalid": counters["invalid"] + stream_total("invalid"),
            "dead": stream_total("dead"),
            "in_flight": self._pool.in_flight,
            "pubsub": self._listener.stats(),
            "streams": [c.stats() for c in consumers],
            "handlers": [s.stats() for s in subscriptions],
        }
