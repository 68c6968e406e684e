"""Fast recovery of the messages a lost consumer held, and the heartbeat that tells.

With late acknowledgement, a message a worker took stays in kombu's unacknowledged set
until it is acknowledged; only the visibility timeout (an hour by default) would give
it back if the worker never does. Two ways that happens, both handled here:

- **The worker dies** (kill -9, OOM, host lost). Each message is recorded with the id
  of the consumer holding it (``broker.py``), and each worker keeps its consumer id in
  the ``consumers`` roster with a lapse time, renewed every ``ttl / 5``. The
  scheduler's ``Recoverer`` gives back the messages of any consumer that lapsed, to
  the front of their queues, with kombu's own restore.
- **The worker loses its broker connection** and Celery restarts its consumer,
  dropping the messages it had reserved but not started. The new consumer gets a new
  id (a new generation); at that moment the worker keeps the messages of the tasks
  still running under the new id and gives the others back at once.

A worker that stalls longer than ``MEETINGTASKS_HEARTBEAT_TTL`` without dying counts as
lost too: its tasks may then run twice (the documented duplicate window).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from meetingtasks import broker
from meetingtasks.keys import Keys, get_keys
from meetingtasks.store import get_redis, writebehind

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps this worker's current consumer id alive in the ``consumers`` roster."""

    def __init__(self, ttl: float, keys: Keys | None = None) -> None:
        self.ttl = ttl
        self.keys = keys or get_keys()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, retire: str | None = None) -> None:
        """Renew the current id (dropping ``retire``), and prune ids lapsed a TTL ago."""
        now = time.time()
        pipe = get_redis().pipeline(transaction=False)
        if broker.consumer_id is not None:
            pipe.zadd(self.keys.consumers(), {broker.consumer_id: now + self.ttl})
        if retire is not None:
            pipe.zrem(self.keys.consumers(), retire)
        pipe.zremrangebyscore(self.keys.consumers(), "-inf", now - self.ttl)
        pipe.execute()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if broker.consumer_id is not None:
            get_redis().zrem(self.keys.consumers(), broker.consumer_id)

    def _run(self) -> None:
        while not self._stopping.wait(self.ttl / 5):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat to Redis failed; retrying", exc_info=True)


def held_by(keys: Keys) -> dict[str, list[str]]:
    """Consumer id -> delivery tags of the messages it holds."""
    held: dict[str, list[str]] = defaultdict(list)
    for tag, owner in get_redis().hgetall(keys.unacked_owner()).items():
        held[owner].append(tag)
    return held


def restore(tags: Iterable[str]) -> int:
    """Put held messages back at the front of their queues (kombu's own restore)."""
    from meetingtasks.app import app

    restored = 0
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag)
            restored += 1
    return restored


class Recoverer:
    """The scheduler's loop step: gives the messages of lapsed consumers back."""

    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or get_keys()

    def sweep(self) -> int:
        """Restore every message a lapsed consumer held; returns how many."""
        held = held_by(self.keys)
        if not held:
            return 0
        alive = set(get_redis().zrangebyscore(self.keys.consumers(), time.time(), "+inf"))
        restored = 0
        for owner, tags in held.items():
            if owner not in alive:
                log.warning("consumer %s is gone: returning %d message(s)", owner, len(tags))
                restored += restore(tags)
        return restored


class WorkerConsumers:
    """A worker process's consumer ids: one per (re)connected consumer."""

    def __init__(self, hostname: str, ttl: float, running_tags: Callable[[], set[str]]) -> None:
        self.base = f"{hostname}:{socket.gethostname()}:{os.getpid()}"
        self.running_tags = running_tags
        self.keys = get_keys()
        self.heartbeat = Heartbeat(ttl, self.keys)

    def start(self) -> None:
        broker.consumer_base = self.base
        broker.on_new_consumer = self.hand_over
        self.heartbeat.start()

    def stop(self) -> None:
        self.heartbeat.stop()

    def hand_over(self, previous: str | None, current: str) -> None:
        """A new consumer starts: it keeps what still runs, the rest goes back at once."""
        self.heartbeat.beat(retire=previous)
        if previous is None:
            return
        if writebehind.worker_writes is not None:
            writebehind.worker_writes.flush()  # acknowledgements still waiting count too
        tags = held_by(self.keys).get(previous, [])
        running = self.running_tags()
        keep = [tag for tag in tags if tag in running]
        if keep:
            get_redis().hset(self.keys.unacked_owner(), mapping=dict.fromkeys(keep, current))
        returned = restore(tag for tag in tags if tag not in running)
        if tags:
            log.warning(
                "consumer restarted: kept %d running message(s), returned %d", len(keep), returned
            )
