"""Priority: parsing, and real order of execution on Redis."""

from __future__ import annotations

import random

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.errors import InvalidPriority
from tests.support.waiting import wait_for_journal
from tests.worker_tasks import record


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("critical", Priority.CRITICAL),
        ("HIGH", Priority.HIGH),
        (" normal ", Priority.NORMAL),
        ("low", Priority.LOW),
        (Priority.HIGH, Priority.HIGH),
        (0, Priority.CRITICAL),
        (9, Priority.LOW),
        # Celery's 0-9 land where kombu's priority steps would put them.
        (1, Priority.CRITICAL),
        (5, Priority.HIGH),
        (8, Priority.NORMAL),
    ],
)
def test_parse_accepts_names_and_numbers(given: object, expected: Priority) -> None:
    assert Priority.parse(given) is expected


@pytest.mark.parametrize("given", ["urgent", "", -1, 10, None, True, 3.0, ["high"]])
def test_parse_refuses_anything_else_with_the_valid_choices(given: object) -> None:
    with pytest.raises(InvalidPriority, match="critical, high, normal, low"):
        Priority.parse(given)


def test_backlog_runs_in_priority_order(app, redis, start_worker) -> None:
    counts = {Priority.LOW: 200, Priority.NORMAL: 200, Priority.HIGH: 200, Priority.CRITICAL: 20}
    batch = [p for p, n in counts.items() for _ in range(n)]
    random.Random(7).shuffle(batch)
    for i, priority in enumerate(batch):
        record.apply_async((f"{priority.name}-{i}",), queue="media", priority=priority)

    keys = get_keys()
    for priority, n in counts.items():
        assert redis.llen(keys.queue("media", priority)) == n

    start_worker(["media"], concurrency=1)
    order = [Priority(entry["priority"]) for entry in wait_for_journal("order", len(batch))]

    assert len(order) == len(batch)
    assert order == sorted(order), "a lower-priority task ran before a higher one"
    assert [order.count(p) for p in counts] == list(counts.values())


def test_a_worker_with_idle_processes_takes_several_messages_in_priority_order(
    app, redis, start_worker
) -> None:
    """One fetch takes a message for every idle pool process (they share the fetch's
    start time), and only in priority order: nothing lower is taken while a higher one
    waits, beyond what was already running."""
    processes = 4
    counts = {Priority.LOW: 60, Priority.CRITICAL: 12}
    batch = [p for p, n in counts.items() for _ in range(n)]
    random.Random(11).shuffle(batch)
    sent = {
        record.apply_async((p.name,), {"sleep": 0.02}, queue="media", priority=p).id: p
        for p in batch
    }

    start_worker(["media"], concurrency=processes)
    order = [Priority(entry["priority"]) for entry in wait_for_journal("order", len(batch))]

    keys = get_keys()
    started = [redis.hget(keys.status(task_id), "started_at") for task_id in sent]
    assert max(started.count(at) for at in set(started)) > 1, "no fetch took several"
    last_critical = max(i for i, p in enumerate(order) if p is Priority.CRITICAL)
    assert last_critical < counts[Priority.CRITICAL] + processes
