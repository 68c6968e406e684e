"""Admin reads for stats: every cluster-wide number ``Runtime.stats()`` shows, read
in one round trip.

Kept apart from the hot path: nothing that sends or runs a task calls this. One MULTI,
so the numbers are one consistent moment (a task the scheduler moves from the delay
store to its queue is counted once, never twice or not at all), and the cost is a few
O(1) commands per queue whatever the backlog: this is what a Prometheus scrape pays.

Delayed and dead-letter counts are totals over all queues: each lives in one structure
shared by the queues, and splitting them by queue would mean reading every entry (up to
millions of delayed tasks). Processing adds up what every consumer of the roster holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meetingtasks.base.keys import Keys
from meetingtasks.base.priority import Priority
from meetingtasks.store import get_redis


@dataclass(frozen=True)
class Snapshot:
    #: queue -> priority -> messages waiting in that kombu list
    depths: dict[str, dict[Priority, int]]
    #: tasks in the delay store, not yet due
    delayed: int
    #: messages taken by a worker and not acknowledged yet (running or reserved)
    processing: int
    #: tasks in the dead-letter queue
    dead_letters: int
    #: messages set aside as unable to ever become a task (``store/malformed.py``)
    malformed: int
    #: ids of the worker consumers whose heartbeat has not lapsed
    consumers: list[str]
    #: the scheduler loops' cluster-wide counters (moved, promoted, recovered…)
    scheduler: dict[str, int]
    #: messages on lists nobody reads, where a misconfigured producer puts them
    #: (``unconsumed_lists``): list name -> messages
    unconsumed: dict[str, int]


#: kombu's default separator between a queue's name and its priority step.
KOMBU_SEP = "\x06\x16"


def unconsumed_lists(keys: Keys, queues: Iterable[str]) -> list[str]:
    """Where a producer without our package puts tasks when a setting of docs/wire.md is
    missing, so that no worker ever reads them: without the key prefix, with kombu's
    default priority separator (``priority_steps`` not ``[0]``), on Celery's default queue."""
    names = []
    for queue in (*queues, "celery"):
        names += [queue, f"{keys.prefix}{queue}" if queue == "celery" else ""]
        for step in (3, 6, 9):
            names += [f"{queue}{KOMBU_SEP}{step}", f"{keys.prefix}{queue}{KOMBU_SEP}{step}",
                      f"{keys.inbox(queue)}{KOMBU_SEP}{step}"]  # fmt: skip
    return [name for name in names if name]


def snapshot(keys: Keys, queues: Iterable[str], now: float) -> Snapshot:
    """Read everything at once (the roster first: whose held messages to count); ``now``
    (unix time) decides whose heartbeat lapsed."""
    queues = tuple(queues)
    holders = [str(consumer) for consumer in get_redis().zrange(keys.consumers(), 0, -1)]
    pipe = get_redis().pipeline(transaction=True)
    for queue in queues:
        for priority in Priority:
            pipe.llen(keys.queue(queue, priority))
    pipe.zcard(keys.delayed())
    pipe.zcard(keys.dlq())
    pipe.llen(keys.malformed())
    pipe.zrangebyscore(keys.consumers(), now, "+inf")
    pipe.hgetall(keys.scheduler_stats())
    unconsumed = unconsumed_lists(keys, queues)
    for name in unconsumed:
        pipe.llen(name)
    for holder in holders:
        for queue in queues:
            pipe.hlen(keys.held(queue, holder))
    replies = pipe.execute()

    levels = len(Priority)
    depths = {
        queue: dict(zip(Priority, replies[n * levels : (n + 1) * levels], strict=True))
        for n, queue in enumerate(queues)
    }
    start = len(queues) * levels
    delayed, dead_letters, malformed, consumers, counters = replies[start : start + 5]
    lengths = replies[start + 5 : start + 5 + len(unconsumed)]
    processing = sum(replies[start + 5 + len(unconsumed) :])
    return Snapshot(
        depths=depths,
        delayed=int(delayed),
        processing=int(processing),
        dead_letters=int(dead_letters),
        malformed=int(malformed),
        consumers=sorted(consumers),
        scheduler={name: int(value) for name, value in counters.items()},
        unconsumed={name: int(n) for name, n in zip(unconsumed, lengths, strict=True) if n},
    )
