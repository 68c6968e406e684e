"""Priority aging: a task that waited long moves up, so LOW work is never starved."""

from __future__ import annotations

import json
import threading
import time

from meetingtasks.base.keys import get_keys
from meetingtasks.base.loops import Periodic
from meetingtasks.base.priority import Priority
from meetingtasks.policies.aging import PriorityAging
from tests.worker_tasks import read_journal, record

PERIOD = 10.0


def labels_in(redis, priority: Priority) -> list[str]:
    """Labels of the media queue's list at ``priority``, oldest (next to run) first."""
    raw = reversed(redis.lrange(get_keys().queue("media", priority), 0, -1))
    return [json.loads(m)["headers"]["argsrepr"] for m in raw]


def send(redis, label: str, priority: Priority, **headers: float) -> None:
    """Queue a task on media; ``headers`` overwrite its timing headers in place."""
    record.apply_async((label,), queue="media", priority=priority)
    if headers:
        key = get_keys().queue("media", priority)
        message = json.loads(redis.lpop(key))
        message["headers"].update(headers)
        redis.lpush(key, json.dumps(message))


def aging_at(offset: float) -> PriorityAging:
    return PriorityAging(PERIOD, queues=("media",), clock=lambda: time.time() + offset)


def test_each_full_period_of_waiting_earns_one_level(app, redis) -> None:
    record.apply_async(("low",), queue="media", priority=Priority.LOW)
    record.apply_async(("normal",), queue="media", priority=Priority.NORMAL)
    record.apply_async(("critical",), queue="media", priority=Priority.CRITICAL)

    assert aging_at(PERIOD * 0.5).sweep() == 0
    assert aging_at(PERIOD * 2.5).sweep() == 2

    assert labels_in(redis, Priority.LOW) == []
    assert labels_in(redis, Priority.HIGH) == ["('low',)"]  # two levels up
    assert labels_in(redis, Priority.CRITICAL) == ["('critical',)", "('normal',)"]


def test_a_promoted_task_joins_the_back_of_its_new_level(app, redis) -> None:
    send(redis, "old-low", Priority.LOW)
    send(redis, "fresh-normal", Priority.NORMAL, mt_enqueued_at=time.time() + PERIOD)

    assert aging_at(PERIOD * 1.2).sweep() == 1

    assert labels_in(redis, Priority.NORMAL) == ["('fresh-normal',)", "('old-low',)"]


def test_a_delayed_task_ages_from_when_it_is_due(app, redis) -> None:
    send(redis, "delayed", Priority.LOW, mt_due_at=time.time() + PERIOD * 3)
    assert aging_at(PERIOD * 2.5).sweep() == 0
    assert aging_at(PERIOD * 4.5).sweep() == 1


def test_aging_off_keeps_strict_priority(app, redis) -> None:
    record.apply_async(("low",), queue="media", priority=Priority.LOW)
    assert PriorityAging(0, queues=("media",), clock=lambda: time.time() + 1e6).sweep() == 0
    assert labels_in(redis, Priority.LOW) == ["('low',)"]


def test_low_task_runs_under_constant_critical_load(app, redis, start_worker) -> None:
    """CRITICAL tasks keep arriving as fast as they drain; the LOW one still runs."""
    critical_key = get_keys().queue("media", Priority.CRITICAL)
    stop = threading.Event()

    def top_up() -> None:
        for _ in range(10):
            record.apply_async(("critical", "load", 0.01), queue="media", priority=0)

    def flood() -> None:
        while not stop.is_set():
            if redis.llen(critical_key) < 20:
                top_up()
            time.sleep(0.002)

    for _ in range(3):
        top_up()
    record.apply_async(("low", "load"), queue="media", priority=Priority.LOW)
    flooder = threading.Thread(target=flood)
    flooder.start()
    aging = Periodic("aging", PriorityAging(0.5, queues=("media",)).sweep, interval=0.1)
    try:
        start_worker(["media"], concurrency=1)
        aging.start()
        deadline = time.monotonic() + 120
        while "low" not in (labels := [e["label"] for e in read_journal("load")]):
            assert time.monotonic() < deadline, "the LOW task never ran"
            time.sleep(0.1)
        assert redis.llen(critical_key) > 0, "the CRITICAL load was not constant"
    finally:
        stop.set()
        flooder.join()
        aging.stop()
    # It waited behind the CRITICAL backlog it found (30), then overtook later arrivals
    # (CRITICAL tasks were still queued when it ran, checked above).
    assert labels.index("low") >= 30
