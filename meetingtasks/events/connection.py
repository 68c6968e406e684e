"""Redis clients of the EventBus, and the backoff its readers wait between reconnects.

Two clients per bus. The writer (publish, ack) keeps redis-py's default retries, so a
publish rides over a brief blip. The reader (Pub/Sub, XREADGROUP, claims) has none: its
loop owns reconnection, so it notices every drop, counts it, backs off with jitter and
re-subscribes on a fresh connection instead of half-resubscribing inside redis-py.

Both speak RESP2: with RESP3 (redis-py 8's default) a PING on a subscribed connection
answers in a shape redis-py's Pub/Sub cannot parse, and the reader needs that PING to
find half-open connections.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from meetingtasks.events.config import EventBusConfig

#: What a reader treats as "Redis went away": reconnect, never crash.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def connect(url: str, config: EventBusConfig, *, retry: bool) -> redis.Redis:
    """A client that decodes replies to str (events are JSON text)."""
    options: dict[str, object] = {
        "decode_responses": True,
        "protocol": 2,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": min(config.socket_timeout, 5.0),
        "socket_keepalive": True,
    }
    if not retry:
        options["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis.from_url(url, **options)


@dataclass
class Backoff:
    """Exponential delays with full jitter, so readers of many processes do not reconnect
    in lockstep after Redis comes back."""

    initial: float
    maximum: float
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(self.initial, max(self.initial, ceiling))

    def reset(self) -> None:
        self.attempt = 0
