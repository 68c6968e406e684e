"""EventBus, fire-and-forget channels (Redis Pub/Sub), against the private redis-server."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from redis import Redis

from meetingtasks.base.keys import get_keys
from meetingtasks.errors import InvalidEvent
from meetingtasks.events import Event
from meetingtasks.run.embedded_redis import RedisServer
from tests.support.events_helpers import WAIT, Buses, Recorder, event, settled
from tests.support.waiting import wait_until


@pytest.fixture
def buses(redis: Redis) -> Iterator[Buses]:
    made = Buses()
    yield made
    made.stop_all()


def test_every_subscriber_gets_every_event(buses: Buses) -> None:
    recorders = [Recorder() for _ in range(3)]
    for recorder in recorders:
        bus = buses.new()
        bus.subscribe("meeting.m1", recorder)
        bus.start()
    publisher = buses.new()
    sent = [event(n=n) for n in range(50)]
    for one in sent:
        publisher.publish("meeting.m1", one)

    for recorder in recorders:
        assert sorted(e.id for e in recorder.wait_for(50)) == sorted(e.id for e in sent)
        assert recorder.events[0] == next(e for e in sent if e.id == recorder.events[0].id)


def test_two_namespaces_never_see_each_others_events(buses: Buses, redis: Redis) -> None:
    got = {"a": Recorder(), "b": Recorder()}
    everything = {"a": Recorder(), "b": Recorder()}
    subscribers = {}
    for namespace in ("a", "b"):
        bus = subscribers[namespace] = buses.new(namespace)
        bus.subscribe("meeting.m1", got[namespace])
        bus.subscribe("*", everything[namespace])
        bus.start()
    assert redis.pubsub_numsub("a:events:meeting.m1", "b:events:meeting.m1") == [
        ("a:events:meeting.m1", 1),
        ("b:events:meeting.m1", 1),
    ]
    publishers = {namespace: buses.new(namespace) for namespace in ("a", "b")}
    for n in range(5):
        publishers["a"].publish("meeting.m1", event(n=n, ns="a"))
    publishers["b"].publish("meeting.m1", event(ns="b"))
    # A last event on each side: once it arrived, everything published before it has too.
    for namespace, publisher in publishers.items():
        publisher.publish("meeting.m1", event(n=99, ns=namespace, last=True))

    for namespace, count in (("a", 6), ("b", 2)):
        for recorder in (got[namespace], everything[namespace]):
            wait_until(recorder.saw_last)
        settled(subscribers[namespace])
        for recorder in (got[namespace], everything[namespace]):
            assert len(recorder.events) == count
            assert {e.payload["ns"] for e in recorder.events} == {namespace}


def test_failing_handler_is_counted_and_does_not_stop_the_others(buses: Buses) -> None:
    failing = Recorder("failing", fail=lambda e: True)
    good = Recorder("good")
    gate = threading.Event()
    stuck = Recorder("stuck", fail=lambda e: not gate.wait(30))
    bus = buses.new()
    for handler in (failing, stuck, good):
        bus.subscribe("meeting.m1", handler)
    bus.start()
    publisher = buses.new()
    for n in range(5):
        publisher.publish("meeting.m1", event(n=n))

    # The good handler gets everything while the stuck one still holds its events.
    assert len(good.wait_for(5)) == 5
    assert not gate.is_set()
    gate.set()
    wait_until(lambda: bus.stats()["delivered"] == 15 and bus.stats()["in_flight"] == 0)
    stats = bus.stats()
    by_handler = {row["handler"]: row for row in stats["handlers"]}
    assert by_handler["failing"]["failed"] == 5
    assert by_handler["failing"]["handled"] == 0
    assert by_handler["good"]["handled"] == 5
    assert by_handler["stuck"]["handled"] == 5
    assert by_handler["good"]["failed"] == 0
    assert stats["failed"] == 5
    assert stats["handled"] == 10


def test_pattern_subscription_gets_matching_channels_only(buses: Buses) -> None:
    meetings, exact = Recorder(), Recorder()
    bus = buses.new()
    bus.subscribe("meeting.*", meetings)
    bus.subscribe("meeting.m2", exact)
    bus.start()
    publisher = buses.new()
    publisher.publish("meeting.m1", event(n=1))
    publisher.publish("media.m1", event("media.stream_started", n=2))
    publisher.publish("meeting.m2", event(n=3))
    publisher.publish("meeting.m3", event(n=4, last=True))

    wait_until(meetings.saw_last)
    settled(bus)
    assert meetings.numbers() == [1, 3, 4]
    assert [e.payload["n"] for e in exact.wait_for(1)] == [3]


def test_subscriber_survives_a_redis_restart(
    buses: Buses, redis: Redis, redis_server: RedisServer
) -> None:
    recorder = Recorder()
    bus = buses.new()
    bus.subscribe("meeting.m1", recorder)
    bus.start()
    publisher = buses.new()
    publisher.publish("meeting.m1", event(n=0))
    recorder.wait_for(1)

    redis_server.restart()
    channel = get_keys().event_channel("meeting.m1")
    wait_until(lambda: redis.pubsub_numsub(channel) == [(channel, 1)], what="re-subscription")
    for n in range(1, 6):
        publisher.publish("meeting.m1", event(n=n))

    assert recorder.numbers(6) == [0, 1, 2, 3, 4, 5]
    stats = bus.stats()["pubsub"]
    assert stats["reconnects"] >= 1
    assert stats["connected"] is True


def test_subscribe_while_running_and_unsubscribe(buses: Buses, redis: Redis) -> None:
    early, late, witness = Recorder(), Recorder(), Recorder()
    bus = buses.new()
    subscription = bus.subscribe("meeting.m1", early)
    bus.start()
    late_subscription = bus.subscribe("meeting.m1", late)  # returns once live
    bus.subscribe("meeting.m9", witness)
    publisher = buses.new()
    publisher.publish("meeting.m1", event(n=1))
    late.wait_for(1)
    early.wait_for(1)

    bus.unsubscribe(subscription)
    publisher.publish("meeting.m1", event(n=2))
    publisher.publish("meeting.m9", event(n=3))  # same connection: arrives after n=2
    witness.wait_for(1)
    late.wait_for(2)
    settled(bus)
    assert [e.payload["n"] for e in early.events] == [1]

    bus.unsubscribe(late_subscription)  # the last handler of the channel: Redis unsubscribes too
    channel = get_keys().event_channel("meeting.m1")
    wait_until(lambda: redis.pubsub_numsub(channel) == [(channel, 0)], what="UNSUBSCRIBE")


def test_undecodable_messages_are_counted_and_skipped(buses: Buses, redis: Redis) -> None:
    recorder = Recorder()
    bus = buses.new()
    bus.subscribe("meeting.m1", recorder)
    bus.start()
    channel = get_keys().event_channel("meeting.m1")
    redis.publish(channel, "not json")
    redis.publish(channel, '{"source": "x"}')
    buses.new().publish("meeting.m1", event(n=1))

    assert [e.payload["n"] for e in recorder.wait_for(1)] == [1]
    assert bus.stats()["invalid"] == 2


@pytest.mark.parametrize("channel", ["", "a b", "meeting.*", "x" * 201, "mt\nx", None])
def test_publish_refuses_bad_channels(buses: Buses, channel: object) -> None:
    with pytest.raises(InvalidEvent, match="channel"):
        buses.new().publish(channel, event())  # type: ignore[arg-type]


def test_bad_subscriptions_and_events_are_refused(buses: Buses) -> None:
    bus = buses.new()
    with pytest.raises(InvalidEvent, match="bad channel name"):
        bus.subscribe("meeting m1", Recorder())
    with pytest.raises(InvalidEvent, match="fire-and-forget"):
        bus.subscribe("meeting.m1", Recorder(), group="svc")
    with pytest.raises(InvalidEvent, match="callable"):
        bus.subscribe("meeting.m1", "not a handler")  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="takes an Event"):
        bus.publish("meeting.m1", {"type": "meeting.created"})  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="over the"):
        bus.publish("meeting.m1", Event("meeting.created", {"blob": "x" * 300_000}, "t"))


def test_silent_connection_is_detected_by_ping_and_replaced(
    buses: Buses, redis: Redis, redis_server: RedisServer
) -> None:
    """A frozen Redis (SIGSTOP) keeps the socket open but answers nothing, like a half-open
    connection after a failover: only the listener's own PING can notice it."""
    recorder = Recorder()
    bus = buses.new(health_check_interval=0.3)
    bus.subscribe("meeting.m1", recorder)
    bus.start()
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: bus.stats()["pubsub"]["reconnects"] >= 1, what="PING timeout")
    finally:
        os.kill(pid, signal.SIGCONT)
    # Redis may still count the abandoned connection for a moment: ask the bus itself.
    assert bus.ready(WAIT)
    buses.new().publish("meeting.m1", event(n=1))
    assert [e.payload["n"] for e in recorder.wait_for(1)] == [1]
