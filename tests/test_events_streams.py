"""EventBus, durable channels (Redis Streams + consumer groups), against the private Redis.

FAST (tests/support/events_helpers.py) makes ``durable.*`` channels durable and sets
claim_idle to half a second, so stuck entries are claimed while the test watches.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from redis import Redis

from meetingtasks.base.keys import get_keys
from meetingtasks.errors import InvalidEvent
from meetingtasks.run.embedded_redis import RedisServer
from tests.support.events_helpers import WAIT, Buses, Recorder, event
from tests.support.waiting import wait_until

STREAM = get_keys().event_stream("durable.ai")


@pytest.fixture
def buses(redis: Redis) -> Iterator[Buses]:
    made = Buses()
    yield made
    made.stop_all()


def pending(redis: Redis, group: str = "svc") -> int:
    return int(redis.xpending(STREAM, group)["pending"])


def test_group_that_was_down_gets_everything_it_missed(buses: Buses, redis: Redis) -> None:
    first = buses.new()
    first.subscribe("durable.ai", Recorder(), group="svc", consumer="c1")
    first.start()
    first.stop()  # the service goes down; its group stays in Redis

    publisher = buses.new()
    sent = [event("ai.task_completed", n=n) for n in range(1000)]
    for one in sent:
        publisher.publish("durable.ai", one)

    recorder = Recorder()
    back = buses.new()
    back.subscribe("durable.ai", recorder, group="svc", consumer="c1")
    back.start()
    got = recorder.wait_for(1000)
    assert sorted(e.id for e in got) == sorted(e.id for e in sent)
    wait_until(lambda: pending(redis) == 0, what="every entry acknowledged")


def test_groups_each_get_all_and_consumers_of_a_group_share(buses: Buses, redis: Redis) -> None:
    shared = [Recorder(), Recorder()]
    alone = Recorder()
    for n, recorder in enumerate(shared):
        bus = buses.new()
        bus.subscribe("durable.ai", recorder, group="svc", consumer=f"c{n}")
        bus.start()
    other = buses.new(group="audit")
    other.subscribe("durable.ai", alone)  # group from the config, generated consumer name
    other.start()
    publisher = buses.new()
    for n in range(200):
        publisher.publish("durable.ai", event(n=n))

    assert len({e.payload["n"] for e in alone.wait_for(200)}) == 200
    wait_until(lambda: sum(len(r.events) for r in shared) >= 200)
    received = Counter(e.payload["n"] for r in shared for e in r.events)
    assert set(received) == set(range(200))
    assert set(received.values()) == {1}
    other.stop()  # its generated consumer name, with nothing pending, is removed
    assert redis.xinfo_consumers(STREAM, "audit") == []
    assert [c["name"] for c in redis.xinfo_consumers(STREAM, "svc")] == ["c0", "c1"]


def test_nothing_is_delivered_twice_to_a_group_after_ack(buses: Buses, redis: Redis) -> None:
    first_run = Recorder()
    bus = buses.new()
    bus.subscribe("durable.ai", first_run, group="svc", consumer="c1")
    bus.start()
    publisher = buses.new()
    for n in range(100):
        publisher.publish("durable.ai", event(n=n))
    first_run.wait_for(100)
    wait_until(lambda: pending(redis) == 0, what="acknowledgements")
    bus.stop()

    second_run = Recorder()
    again = buses.new()
    again.subscribe("durable.ai", second_run, group="svc", consumer="c1")
    again.start()
    wait_until(lambda: again.stats()["streams"][0]["connected"])
    publisher.publish("durable.ai", event(n=100))  # read after the claim scan at start
    assert [e.payload["n"] for e in second_run.wait_for(1)] == [100]
    assert len(first_run.events) == 100
    assert again.stats()["streams"][0]["claimed"] == 0


def test_entries_of_a_crashed_consumer_are_claimed_by_another(buses: Buses, redis: Redis) -> None:
    redis.xgroup_create(STREAM, "svc", id="$", mkstream=True)
    publisher = buses.new()
    for n in range(20):
        publisher.publish("durable.ai", event(n=n))
    # A consumer reads everything and dies before acknowledging any of it.
    redis.xreadgroup("svc", "crashed", {STREAM: ">"}, count=100)
    assert pending(redis) == 20

    recorder = Recorder()
    survivor = buses.new()
    survivor.subscribe("durable.ai", recorder, group="svc", consumer="survivor")
    survivor.start()
    assert recorder.numbers(20) == list(range(20))
    wait_until(lambda: pending(redis) == 0, what="claimed entries acknowledged")
    assert survivor.stats()["streams"][0]["claimed"] == 20


def test_poison_entry_is_retried_then_dead_instead_of_looping(buses: Buses, redis: Redis) -> None:
    recorder = Recorder(fail=lambda e: bool(e.payload.get("poison")))
    bus = buses.new(max_deliveries=3)
    bus.subscribe("durable.ai", recorder, group="svc", consumer="c1")
    bus.start()
    publisher = buses.new()
    publisher.publish("durable.ai", event(n=0, poison=True))
    for n in range(1, 6):
        publisher.publish("durable.ai", event(n=n))

    wait_until(lambda: bus.stats()["dead"] == 1, what="the poison entry to be declared dead")
    wait_until(lambda: pending(redis) == 0)
    attempts = Counter(e.payload["n"] for e in recorder.events)
    assert attempts[0] == 3
    assert all(attempts[n] == 1 for n in range(1, 6))
    stats = bus.stats()
    assert stats["failed"] == 3
    assert stats["handled"] == 5


def test_stream_length_is_bounded(buses: Buses, redis: Redis) -> None:
    publisher = buses.new(stream_maxlen=500)
    for n in range(3000):
        publisher.publish("durable.ai", event(n=n))
    # MAXLEN ~ trims whole stream nodes (100 entries each by default), never below 500.
    assert 500 <= redis.xlen(STREAM) <= 700


def test_durable_consumer_survives_a_redis_restart(
    buses: Buses, redis: Redis, redis_server: RedisServer
) -> None:
    recorder = Recorder()
    bus = buses.new()
    bus.subscribe("durable.ai", recorder, group="svc", consumer="c1")
    bus.start()
    publisher = buses.new()
    publisher.publish("durable.ai", event(n=0))
    recorder.wait_for(1)

    redis_server.restart()
    for n in range(1, 11):
        publisher.publish("durable.ai", event(n=n))

    assert recorder.numbers(11) == list(range(11))
    assert bus.stats()["streams"][0]["reconnects"] >= 1


def test_stop_lets_running_handlers_finish_and_acks_them(buses: Buses, redis: Redis) -> None:
    gate = threading.Event()
    recorder = Recorder(fail=lambda e: not gate.wait(WAIT))
    bus = buses.new()
    bus.subscribe("durable.ai", recorder, group="svc", consumer="c1")
    bus.start()
    publisher = buses.new()
    for n in range(5):
        publisher.publish("durable.ai", event(n=n))
    recorder.wait_for(5)  # all five handlers are running, none acknowledged
    assert pending(redis) == 5

    stopping = threading.Thread(target=bus.stop)
    stopping.start()
    gate.set()
    stopping.join(WAIT)
    assert not stopping.is_alive()
    assert pending(redis) == 0
    assert bus.stats()["handled"] == 5


def test_durable_subscription_needs_a_group(buses: Buses) -> None:
    bus = buses.new()
    with pytest.raises(InvalidEvent, match="group="):
        bus.subscribe("durable.ai", Recorder())
    with pytest.raises(InvalidEvent, match="by name"):
        bus.subscribe("durable.*", Recorder(), group="svc")
    with pytest.raises(InvalidEvent, match="bad consumer group name"):
        bus.subscribe("durable.ai", Recorder(), group="a b")
    bus.subscribe("durable.ai", Recorder(), group="svc", consumer="c1")
    with pytest.raises(InvalidEvent, match="another consumer name"):
        bus.subscribe("durable.ai", Recorder(), group="svc", consumer="c1")
