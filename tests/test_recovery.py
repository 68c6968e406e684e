"""Giving back what a lost consumer held: once, at the front of its queue, racing safely."""

from __future__ import annotations

import json
import time

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.loops import Periodic
from meetingtasks.base.priority import Priority
from meetingtasks.policies.recovery import Heartbeat, Recoverer
from meetingtasks.store import get_redis, held, script
from tests.support.held import held_now, holders
from tests.support.waiting import wait_until
from tests.worker_tasks import read_journal, record, sleep


def take(app, owner: str, queue: str = "media", most: int = 10) -> list[str]:
    """Take up to ``most`` messages from ``queue`` as consumer ``owner``, with the fetch
    step a worker uses; returns their delivery tags."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        channel.owner_id = owner
        head, tail, _, _ = channel._build_fetch_command((queue,))
        get_redis().script_load(script("fetch").script)
        reply = get_redis().execute_command(*head, time.time(), *tail, most)
    return [json.loads(raw)["properties"]["delivery_tag"] for raw in (reply or [])[1::2]]


def next_first(redis, queue: str, priority: Priority) -> list[dict]:
    """The messages of one list, the next to be taken first (workers pop the right end)."""
    raw = redis.lrange(get_keys().queue(queue, priority), 0, -1)
    return [json.loads(message) for message in reversed(raw)]


def test_a_lost_consumers_message_goes_back_to_the_front_once(app, redis) -> None:
    keys = get_keys()
    first = record.apply_async(("first",), queue="media", priority=Priority.HIGH)
    tags = take(app, "dead/1", most=1)
    later = record.apply_async(("later",), queue="media", priority=Priority.HIGH)
    redis.delete(keys.doorbell("media"))

    dead = keys.held("media", "dead/1")
    assert held.give_back_tags(keys, dead, tags).returned == 1
    assert held.give_back_tags(keys, dead, tags).returned == 0  # a second finds nothing

    messages = next_first(redis, "media", Priority.HIGH)
    assert [m["headers"]["id"] for m in messages] == [first.id, later.id]  # first runs next
    back = messages[0]
    assert back["headers"]["redelivered"] is True
    assert back["properties"]["delivery_info"]["redelivered"] is True
    assert redis.llen(keys.doorbell("media")) == 1  # idle workers wake for it
    assert held_now(redis) == {}


def test_a_message_acknowledged_after_it_was_read_is_not_given_back(app, redis) -> None:
    """A recoverer read a consumer's held messages; the run ended and released one
    meanwhile: that one is not given back (it would run twice)."""
    keys = get_keys()
    record.apply_async(("running",), queue="media")
    tags = take(app, "worker/1")
    key = keys.held("media", "worker/1")
    as_read = held.holding(keys, "worker/1", ["media"])["media"]
    redis.hdel(key, *tags)  # the run's end
    assert held.give_back(keys, "media", key, as_read).returned == 0
    assert redis.llen(keys.queue("media", Priority.NORMAL)) == 0


def test_the_recoverer_gives_back_only_what_lapsed_consumers_hold(app, redis) -> None:
    keys = get_keys()
    for label in ("a", "b", "c"):
        record.apply_async((label,), queue="media")
    lapsed, alive = take(app, "lapsed/1", most=2), take(app, "alive/1", most=1)
    now = time.time()
    redis.zadd(keys.consumers(), {"lapsed/1": now - 1, "alive/1": now + 60})

    assert Recoverer(keys).sweep() == 2
    assert holders(redis) == {"alive/1": set(alive)}
    assert redis.llen(keys.queue("media", Priority.NORMAL)) == len(lapsed)
    assert redis.zrange(keys.consumers(), 0, -1) == ["alive/1"]  # the lapsed one dropped


def test_a_beat_that_lands_after_its_consumer_was_retired_does_not_revive_it(redis) -> None:
    """A beat sent as the broker went away lands (after the client's retries) once the
    worker's new consumer retired the old id: the old id must not stay in the roster,
    where it would count as a second worker."""
    keys = get_keys()
    # What current() says at each beat: the last beat read it before the reconnect.
    ids = iter(["worker/1", "worker/2", "worker/2", "worker/1"])
    heartbeat = Heartbeat(30, lambda: next(ids), keys)
    heartbeat.beat()
    heartbeat.beat()  # the new consumer's first beat (hand_over) ...
    heartbeat.beat(retire="worker/1")  # ... and its last
    assert redis.zrange(keys.consumers(), 0, -1) == ["worker/2"]

    heartbeat.beat()  # the late one, renewing worker/1
    assert redis.zrange(keys.consumers(), 0, -1) == ["worker/2"]
    assert heartbeat.live == 1


@pytest.mark.parametrize("peers", [1, 4])
def test_a_loop_run_by_every_worker_waits_longer_the_more_workers_run_it(peers: int) -> None:
    loop = Periodic("sweep", lambda: 0, interval=2.0, peers=lambda: peers)
    pauses = [loop.pause() for _ in range(200)]
    assert all(0.5 * 2.0 * peers <= p <= 1.5 * 2.0 * peers for p in pauses)
    assert max(pauses) - min(pauses) > 0.5 * peers  # jittered, not in step
    assert Periodic("alone", lambda: 0, interval=2.0).pause() == 2.0


def test_a_running_task_stays_with_its_worker_whatever_channels_it_opens(
    app, redis, start_worker
) -> None:
    """Celery's worker consumes on more channels than the tasks' (mingle, gossip, remote
    control), all on one connection: they share one consumer id, the one its heartbeat
    keeps alive, so no recoverer takes a running task back and runs it twice."""
    keys = get_keys()
    start_worker(["user"], concurrency=2, mingle_and_gossip=True)
    result = sleep.apply_async((6, "held"))
    wait_until(lambda: read_journal("held"), "the task to start")
    owners = set(holders(redis))
    assert owners, "the running task's message is held by its worker"
    alive = set(redis.zrangebyscore(keys.consumers(), time.time(), "+inf"))
    assert owners <= alive, f"held by {owners}, heartbeats for {alive}"
    assert result.get(timeout=60) == "slept"  # the recoverer swept meanwhile (every 2 s)
    assert [e["event"] for e in read_journal("held")] == ["started", "finished"]
