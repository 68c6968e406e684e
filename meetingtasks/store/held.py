"""Redis operations on the messages workers hold (kombu's unacknowledged set, plus who
holds each): who holds what, and giving a lost holder's messages back.

Kombu's own restore watches the whole unacknowledged hash (every take and every
acknowledgement in the cluster aborts it and makes it start over) and pushes no doorbell
token, so an idle worker would not wake for a message given back. Here each message is
given back by one script (``lua/recover.lua``), only if its holder still holds it as it
was read, so any number of workers recovering at once give each message back once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from meetingtasks.base.keys import Keys
from meetingtasks.base.priority import Priority
from meetingtasks.store import get_bytes_redis, get_redis, script
from meetingtasks.store.queueing import DOORBELL_TOKENS, to_json


def held_by(keys: Keys) -> dict[str, list[str]]:
    """Consumer id -> delivery tags of the messages it holds."""
    held: dict[str, list[str]] = defaultdict(list)
    for tag, owner in get_redis().hgetall(keys.unacked_owner()).items():
        held[str(owner)].append(str(tag))
    return held


def reassign(keys: Keys, tags: list[str], owner: str) -> None:
    """Record ``owner`` as the holder of ``tags`` (a worker's new consumer keeps them)."""
    if tags:
        get_redis().hset(keys.unacked_owner(), mapping=dict.fromkeys(tags, owner))


class Unreadable(NamedTuple):
    """A held entry that cannot be given back (not JSON Python reads, not a message)."""

    tag: str
    entry: bytes | str
    reason: str


class GivenBack(NamedTuple):
    returned: int
    #: Entries to set aside instead (policies/poison.py): one bad entry must not stop the
    #: messages held beside it, nor fail every later sweep.
    unreadable: list[Unreadable]


def give_back(keys: Keys, owner: str, tags: Iterable[str]) -> GivenBack:
    """Put the messages ``owner`` holds under ``tags`` back at the front of their queues;
    says how many went back (fewer if some were acknowledged or given back meanwhile) and
    which entries could not be read.

    A message published to a named exchange (not Celery's default) is left to kombu's
    visibility-timeout restore, which knows that exchange's bindings.
    """
    tags = list(tags)
    if not tags:
        return GivenBack(0, [])
    entries = get_bytes_redis().hmget(keys.unacked(), tags)
    call_keys = [keys.unacked(), keys.unacked_index(), keys.unacked_owner()]
    args: list[Any] = [owner, DOORBELL_TOKENS]
    unreadable = []
    for tag, entry in zip(tags, entries, strict=True):
        if entry is None:
            continue
        try:
            message, exchange, queue = _parse(entry)
        except (ValueError, TypeError) as exc:
            unreadable.append(Unreadable(tag, entry, f"held by {owner} and unreadable ({exc})"))
            continue
        if exchange:
            continue
        _mark_redelivered(message)
        step = Priority.parse(_priority(message))
        call_keys += [keys.queue(queue, step), keys.doorbell(queue)]
        args += [tag, entry, to_json(message)]
    if len(args) == 2:
        return GivenBack(0, unreadable)
    return GivenBack(int(script("recover")(keys=call_keys, args=args)), unreadable)


def _parse(entry: bytes | str) -> tuple[dict[str, Any], str, str]:
    """(message, exchange, queue) of a held entry; ValueError or TypeError if it is none."""
    message, exchange, queue = orjson.loads(entry)
    if not isinstance(message, dict) or not isinstance(queue, str) or not queue:
        raise ValueError("not [message, exchange, queue]")
    return message, str(exchange or ""), queue


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
