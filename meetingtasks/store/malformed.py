"""The malformed list: what a producer put on a queue that can never become a task.

Nothing on a queue may stop a worker or the recovery sweep, so such a message is taken
off its way (the queue, a worker's held set, an inbox's landing list) and kept here for
people to look at, newest first and bounded (MALFORMED_KEPT). Each entry is a one-line
JSON header saying why and where, then the raw message exactly as found (bytes that are
not UTF-8 included)::

    {"reason": "the body is not base64 (...)", "source": "mt:user:6", "at": 1733568000.2,
     "task_id": "5e1c..."}
    <raw message>

``lua/fetch.lua`` writes the same entries for what it cannot even decode;
``lua/set_aside.lua`` for everything found later (by the worker's checks, by recovery).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from meetingtasks.base.keys import Keys
from meetingtasks.store import get_bytes_redis, script

#: Most entries the malformed list keeps (the oldest go first).
MALFORMED_KEPT = 1000


@dataclass(frozen=True)
class MalformedEntry:
    reason: str
    source: str | None
    at: float | None
    task_id: str | None
    raw: bytes

    def to_json(self) -> dict[str, Any]:
        """For people and scripts: the raw message as text where it is UTF-8."""
        try:
            raw: str = self.raw.decode()
            encoding = "utf-8"
        except UnicodeDecodeError:
            raw, encoding = self.raw.decode("latin-1"), "latin-1 (not UTF-8)"
        return {"reason": self.reason, "source": self.source, "at": self.at,
                "task_id": self.task_id, "raw": raw, "raw_encoding": encoding}  # fmt: skip


def header(reason: str, source: str | None, task_id: str | None = None) -> str:
    """An entry's first line."""
    return json.dumps({"reason": reason, "source": source, "at": time.time(), "task_id": task_id})


def set_aside(
    keys: Keys,
    raw: bytes | str,
    reason: str,
    source: str | None,
    *,
    task_id: str | None = None,
    delivery_tag: str | None = None,
    held: str | None = None,
    landing: str | None = None,
) -> bool:
    """Move ``raw`` to the malformed list with ``reason``: from the ``held`` hash where a
    worker holds it under ``delivery_tag``, or from the ``landing`` list, when given.
    False if someone else took it first (it is then set aside, or was delivered, once)."""
    held_here = held if held and delivery_tag else None
    call_keys = [keys.malformed(), held_here or keys.malformed(), landing or keys.malformed()]
    args = [header(reason, source, task_id), raw, delivery_tag if held_here else "",
            "1" if landing else "", MALFORMED_KEPT]  # fmt: skip
    return bool(script("set_aside")(call_keys, args))


def entries(keys: Keys, limit: int = 20) -> list[MalformedEntry]:
    """The newest ``limit`` entries."""
    return [_parse(raw) for raw in get_bytes_redis().lrange(keys.malformed(), 0, limit - 1)]


def count(keys: Keys) -> int:
    return int(get_bytes_redis().llen(keys.malformed()))


def purge(keys: Keys) -> int:
    """Drop every entry; how many there were."""
    pipe = get_bytes_redis().pipeline()
    pipe.llen(keys.malformed())
    pipe.delete(keys.malformed())
    return int(pipe.execute()[0])


def _parse(entry: bytes | str) -> MalformedEntry:
    if isinstance(entry, str):
        entry = entry.encode()
    first, _, raw = entry.partition(b"\n")
    try:
        meta = json.loads(first)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):  # an entry of an older version: the raw message alone
        return MalformedEntry("unreadable (kept before reasons were recorded)", None, None,
                              None, entry)  # fmt: skip
    return MalformedEntry(
        str(meta.get("reason")), meta.get("source"), meta.get("at"), meta.get("task_id"), raw
    )
