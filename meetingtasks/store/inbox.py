"""Redis operations on a queue's inbox, where producers without our package put task
messages (``docs/wire.md``): move one out as it arrives, read what was moved and not
adopted yet.

A message is moved atomically from the inbox to the queue's landing list (``BLMOVE``:
it never leaves Redis, so a worker killed or cut off right then loses nothing), and
adopted from there by the send path's own script, which takes it off the landing list in
the same step (``store/queueing.py``, ``claim``).
"""

from __future__ import annotations

from typing import Any

import redis

from meetingtasks.base.keys import Keys
from meetingtasks.base.settings import get_settings
from meetingtasks.store import get_bytes_redis, sentinel

#: Seconds one wait for an inbox message blocks (then the landing list is swept).
WAIT_SECONDS = 1.0


def waiting_client() -> redis.Redis:
    """A client of one connection for one inbox's blocking waits (each waiting connection
    is busy until something arrives); replies as bytes, as a foreign producer wrote them."""
    return sentinel.client_for(
        get_settings().redis_url,
        decode_responses=False,
        socket_timeout=WAIT_SECONDS + 10,
        socket_connect_timeout=5,
        max_connections=1,
    )


def wait_for_one(client: redis.Redis, keys: Keys, queue: str) -> bytes | None:
    """The next inbox message of ``queue``, moved to its landing list (None after
    WAIT_SECONDS with none)."""
    moved: Any = client.execute_command(
        "BLMOVE", keys.inbox(queue), keys.landing(queue), "RIGHT", "LEFT", WAIT_SECONDS
    )
    return moved if isinstance(moved, bytes) else None


def landed(keys: Keys, queue: str) -> list[bytes]:
    """What lies on the landing list of ``queue`` (moved out, not adopted yet), oldest first."""
    found: list[Any] = get_bytes_redis().lrange(keys.landing(queue), 0, -1)
    return list(reversed(found))
