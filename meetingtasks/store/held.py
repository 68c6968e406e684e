"""Redis operations on the messages workers hold: what a consumer holds, and giving a
lost consumer's messages back.

Each consumer (a worker's broker connection, ``celery_ext/transport.py``) holds what it
takes from a queue in a hash of its own (``Keys.held``: delivery tag -> the raw message,
as it was on the queue), written by the same step that pops it (``lua/fetch.lua``) and
released by the one that records the run's end (``lua/finish.lua``) or by the
acknowledgement. Kombu's own unacknowledged set keeps three entries per message in
structures shared by every worker, and its restore watches the whole set (every take and
acknowledgement in the cluster aborts it and makes it start over); here one write holds
a message and recovery reads only what a lapsed consumer held.

Each message is given back by one script (``lua/recover.lua``), only if its holder still
holds it exactly as read, so any number of workers recovering at once give each message
back once, at the front of its queue, with a doorbell token.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from meetingtasks.base.keys import Keys
from meetingtasks.base.priority import Priority
from meetingtasks.store import get_bytes_redis, get_redis, script
from meetingtasks.store.queueing import DOORBELL_TOKENS, to_json


def release(pipe: Any, held: list[tuple[str, str]]) -> Any:
    """Add to ``pipe`` (one of our clients, not kombu's prefixed one) what acknowledges
    messages held as (hash, delivery tag): one command per hash, however many there are.
    The other release is the run's end itself (``lua/finish.lua``), and a lost
    consumer's messages leave its hash as they are given back (``lua/recover.lua``)."""
    by_hash: dict[str, list[str]] = {}
    for key, tag in held:
        if key:
            by_hash.setdefault(key, []).append(tag)
    for key, tags in by_hash.items():
        pipe.hdel(key, *tags)
    return pipe


def roster(keys: Keys) -> dict[str, float]:
    """Every consumer id in the roster, with the unix time its heartbeat lapses."""
    entries: list[Any] = get_redis().zrange(keys.consumers(), 0, -1, withscores=True)
    return {str(consumer): float(lapses) for consumer, lapses in entries}


def holding(keys: Keys, consumer: str, queues: Iterable[str]) -> dict[str, dict[str, bytes]]:
    """What ``consumer`` holds, by queue: delivery tag -> raw message (bytes: a hostile
    producer's may not be UTF-8)."""
    queues = list(queues)
    pipe = get_bytes_redis().pipeline(transaction=False)
    for queue in queues:
        pipe.hgetall(keys.held(queue, consumer))
    found = {}
    for queue, entries in zip(queues, pipe.execute(), strict=True):
        if entries:
            found[queue] = {tag.decode(): raw for tag, raw in entries.items()}
    return found


def count(keys: Keys, consumers: Iterable[str], queues: Iterable[str]) -> int:
    """Messages the ``consumers`` hold in all (running, or reserved by their worker)."""
    queues = list(queues)
    pipe = get_redis().pipeline(transaction=False)
    for consumer in consumers:
        for queue in queues:
            pipe.hlen(keys.held(queue, consumer))
    return sum(pipe.execute())


class Unreadable(NamedTuple):
    """A held entry that cannot be given back (not JSON Python reads, not a message)."""

    held: str
    tag: str
    entry: bytes
    reason: str


class GivenBack(NamedTuple):
    returned: int
    #: Entries to set aside instead (policies/poison.py): one bad entry must not stop the
    #: messages held beside it, nor fail every later sweep.
    unreadable: list[Unreadable]


def give_back(keys: Keys, queue: str, held: str, entries: dict[str, bytes]) -> GivenBack:
    """Put the ``entries`` (delivery tag -> raw message, as read) that the hash ``held``
    holds for ``queue`` back at the front of the queue; says how many went back (fewer
    if some were acknowledged or given back meanwhile) and which could not be read."""
    call_keys: list[str] = [held]
    args: list[Any] = [DOORBELL_TOKENS]
    unreadable = []
    for tag, raw in entries.items():
        try:
            message = orjson.loads(raw)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            unreadable.append(Unreadable(held, tag, raw, f"held and unreadable ({exc})"))
            continue
        _mark_redelivered(message)
        step = Priority.parse(_priority(message))
        call_keys += [keys.queue(queue, step), keys.doorbell(queue)]
        args += [tag, raw, to_json(message)]
    if len(args) == 1:
        return GivenBack(0, unreadable)
    return GivenBack(int(script("recover")(keys=call_keys, args=args)), unreadable)


def give_back_tags(keys: Keys, held: str, tags: list[str]) -> GivenBack:
    """Give back what the hash ``held`` (a name ``Keys.held`` made) holds under ``tags``."""
    queue = queue_of(keys, held)
    raws: list[Any] = get_bytes_redis().hmget(held, tags)
    return give_back(keys, queue, held, {t: r for t, r in zip(tags, raws, strict=True) if r})


def queue_of(keys: Keys, held: str) -> str:
    """The queue a held hash's name says (``Keys.held``: ``{ns}:held:{queue}:{consumer}``;
    queue names have no colon, consumer ids may)."""
    return held.removeprefix(keys.held_prefix()).split(":", 1)[0]


def _mark_redelivered(message: dict[str, Any]) -> None:
    """What kombu marks on a message it gives back (Celery's deduplication reads it)."""
    headers = message.get("headers")
    if isinstance(headers, dict):
        headers["redelivered"] = True
    info = (message.get("properties") or {}).get("delivery_info")
    if isinstance(info, dict):
        info["redelivered"] = True


def _priority(message: dict[str, Any]) -> int:
    """The message's priority as kombu reads it: 0-9, anything else the highest."""
    try:
        return min(max(int(message["properties"]["priority"]), 0), 9)
    except (KeyError, TypeError, ValueError):
        return 0
