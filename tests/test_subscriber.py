"""The one Pub/Sub subscriber (store/subscriber.py), against the private redis-server."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from redis import Redis

from meetingtasks.base.settings import get_settings
from meetingtasks.run.embedded_redis import RedisServer
from meetingtasks.store.subscriber import BATCH, Subscriber
from tests.support.events_helpers import WAIT
from tests.support.waiting import wait_until


class Inbox:
    """Every (name, is_pattern, data) a subscriber handed on; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bool, str]] = []

    def __call__(self, name: str, is_pattern: bool, data: str) -> None:
        with self._lock:
            self._messages.append((name, is_pattern, data))

    def wait_for(self, count: int) -> list[tuple[str, bool, str]]:
        wait_until(lambda: len(self.messages) >= count, what=f"{count} messages")
        return self.messages

    @property
    def messages(self) -> list[tuple[str, bool, str]]:
        with self._lock:
            return list(self._messages)


@pytest.fixture
def subscribers(redis: Redis) -> Iterator[list[Subscriber]]:
    """Subscribers made by a test; all stopped at its end, pass or fail."""
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.stop()


def started(subscribers: list[Subscriber], inbox: Inbox, **options: object) -> Subscriber:
    subscriber = Subscriber(get_settings().redis_url, inbox, **options)  # type: ignore[arg-type]
    subscribers.append(subscriber)
    subscriber.start()
    return subscriber


def command_calls(redis: Redis, command: str) -> int:
    return int(redis.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_channel_and_pattern_messages_are_handed_on(subscribers, redis: Redis) -> None:
    inbox = Inbox()
    subscriber = started(subscribers, inbox)
    subscriber.want("sub:a")
    subscriber.want("sub:*", pattern=True)
    assert subscriber.wait_ready(WAIT)
    redis.publish("sub:a", "one")
    redis.publish("sub:b", "two")

    assert sorted(inbox.wait_for(3)) == [
        ("sub:*", True, "one"),
        ("sub:*", True, "two"),
        ("sub:a", False, "one"),
    ]
    stats = subscriber.stats()
    assert (stats["channels"], stats["patterns"], stats["messages"]) == (1, 1, 3)
    assert stats["connected"] is True


def test_many_channels_go_out_in_batches(subscribers, redis: Redis) -> None:
    channels = [f"sub:many:{n}" for n in range(2 * BATCH + 200)]
    redis.config_resetstat()
    inbox = Inbox()
    subscriber = started(subscribers, inbox)
    for channel in channels:
        subscriber.want(channel)
    assert subscriber.wait_ready(WAIT)
    # Three full batches at best; a busy machine may wake the subscriber between two
    # want() calls and send a short one first (one command per channel: 2 * BATCH + 200).
    assert 3 <= command_calls(redis, "subscribe") <= 6
    redis.publish(channels[-1], "last")
    assert inbox.wait_for(1) == [(channels[-1], False, "last")]

    for channel in channels:
        subscriber.drop(channel)
    wait_until(lambda: not redis.pubsub_channels("sub:many:*"), what="UNSUBSCRIBE")
    assert 3 <= command_calls(redis, "unsubscribe") <= 6
    assert subscriber.stats()["channels"] == 0


def test_a_confirmed_subscription_misses_nothing(subscribers, redis: Redis) -> None:
    inbox = Inbox()
    confirmations: list[tuple[str, bool]] = []
    subscriber = started(
        subscribers, inbox, on_confirmed=lambda name, pattern: confirmations.append((name, pattern))
    )
    subscriber.want("sub:confirmed")
    assert not subscriber.wait_confirmed("sub:never", timeout=0.1)
    assert subscriber.wait_confirmed("sub:confirmed", timeout=WAIT)
    assert subscriber.confirmed("sub:confirmed")
    redis.publish("sub:confirmed", "right after")  # no wait: the subscription is live

    assert inbox.wait_for(1) == [("sub:confirmed", False, "right after")]
    assert confirmations == [("sub:confirmed", False)]


def test_a_channel_dropped_and_wanted_again_is_confirmed_again(subscribers, redis: Redis) -> None:
    inbox = Inbox()
    subscriber = started(subscribers, inbox)
    subscriber.want("sub:again")
    assert subscriber.wait_confirmed("sub:again", timeout=WAIT)

    subscriber.drop("sub:again")
    wait_until(lambda: redis.pubsub_numsub("sub:again") == [("sub:again", 0)], what="UNSUBSCRIBE")
    assert not subscriber.confirmed("sub:again")
    subscriber.want("sub:again")
    assert subscriber.wait_confirmed("sub:again", timeout=WAIT)
    redis.publish("sub:again", "back")
    assert inbox.wait_for(1) == [("sub:again", False, "back")]


def test_a_failing_callback_does_not_stop_the_others(subscribers, redis: Redis) -> None:
    inbox = Inbox()

    def refuse_the_first(name: str, is_pattern: bool, data: str) -> None:
        if data == "first":
            raise RuntimeError("handler refuses")
        inbox(name, is_pattern, data)

    subscriber = started(subscribers, refuse_the_first)  # type: ignore[arg-type]
    subscriber.want("sub:fail")
    assert subscriber.wait_ready(WAIT)
    redis.publish("sub:fail", "first")
    redis.publish("sub:fail", "second")
    assert inbox.wait_for(1) == [("sub:fail", False, "second")]
    assert subscriber.stats()["reconnects"] == 0


def test_after_a_redis_restart_everything_is_subscribed_again_then_caught_up(
    subscribers, redis: Redis, redis_server: RedisServer
) -> None:
    inbox = Inbox()
    caught_up = threading.Event()
    confirmed_at_catch_up: list[bool] = []
    subscriber: Subscriber

    def catch_up() -> None:
        confirmed_at_catch_up.append(subscriber.wait_ready(0))
        caught_up.set()

    subscriber = started(subscribers, inbox, on_reconnect=catch_up)
    channels = [f"sub:restart:{n}" for n in range(BATCH + 1)]
    for channel in channels:
        subscriber.want(channel)
    subscriber.want("sub:restart:*", pattern=True)
    assert subscriber.wait_ready(WAIT)
    assert not caught_up.is_set()  # the first connection is no reconnect

    redis_server.restart()
    assert caught_up.wait(WAIT)
    assert confirmed_at_catch_up == [True]  # every subscription was live before catching up
    redis.publish(channels[0], "after")
    redis.publish(channels[-1], "after")

    assert sorted(inbox.wait_for(4)) == sorted(
        [
            (channels[0], False, "after"),
            (channels[-1], False, "after"),
            ("sub:restart:*", True, "after"),
            ("sub:restart:*", True, "after"),
        ]
    )
    stats = subscriber.stats()
    assert stats["reconnects"] >= 1
    assert stats["connected"] is True


def test_a_silent_connection_is_found_by_ping_and_replaced(
    subscribers, redis: Redis, redis_server: RedisServer
) -> None:
    """A frozen Redis (SIGSTOP) keeps the socket open but answers nothing, like a
    half-open connection after a failover: only the subscriber's PING can notice."""
    inbox = Inbox()
    subscriber = started(subscribers, inbox, health_check_interval=0.3)
    subscriber.want("sub:silent")
    assert subscriber.wait_ready(WAIT)
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: subscriber.stats()["reconnects"] >= 1, what="the PING to go unanswered")
    finally:
        os.kill(pid, signal.SIGCONT)

    assert subscriber.wait_ready(WAIT)
    redis.publish("sub:silent", "awake")
    assert inbox.wait_for(1) == [("sub:silent", False, "awake")]


def test_a_subscriber_never_started_stops_cleanly(redis: Redis) -> None:
    subscriber = Subscriber(get_settings().redis_url, Inbox())
    subscriber.want("sub:never-started")
    subscriber.stop()
    subscriber.want("sub:after-stop")  # ignored, no error
    assert subscriber.stats()["connected"] is False
