"""Redis clients for loops that own their reconnection, and the pause between attempts.

A reader (Pub/Sub, XREADGROUP) gets a client without retries inside redis-py: its loop
notices every drop, counts it, backs off and starts over on a fresh connection (a
Pub/Sub connection re-established inside redis-py would come back half-subscribed).
A writer keeps the retries, so a publish rides over a brief blip.

Both speak RESP2: with RESP3 (redis-py 8's default) a PING on a subscribed connection
answers in a shape redis-py's Pub/Sub cannot parse, and subscribers need that PING to
find half-open connections.

Every pause between attempts is redis-py's ``EqualJitterBackoff``: half of the
exponential delay is fixed, half random, so processes that lost Redis together do not
come back in lockstep, and the delay still grows with every failure.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import AbstractBackoff, NoBackoff
from redis.retry import Retry

from meetingtasks.store import sentinel

#: What a reader treats as "Redis went away": reconnect, never crash.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

#: Retries past which a backoff stops doubling: every cap is reached long before, and
#: redis-py's ``base * 2**failures`` overflows a float past 2**1023.
_MAX_DOUBLINGS = 32


def connect(url: str, socket_timeout: float, *, retry: bool) -> redis.Redis:
    """A RESP2 client that decodes replies to str; ``retry=False`` for readers."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "protocol": 2,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5.0),
        "socket_keepalive": True,
    }
    if not retry:
        options["retry"] = Retry(NoBackoff(), 0)
    return sentinel.client_for(url, **options)


def pause(backoff: AbstractBackoff, retries: int) -> float:
    """Seconds to wait before retry number ``retries + 1`` of a run of failures."""
    return backoff.compute(min(retries, _MAX_DOUBLINGS))
