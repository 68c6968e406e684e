"""Fast recovery of the messages a dead worker held, and the heartbeat that tells.

With late acknowledgement a worker killed with -9 leaves the messages it had taken in
kombu's unacknowledged set, where only the visibility timeout (an hour by default)
would give them back. Each worker process here names itself to the transport (which
records it as the holder of every message it takes, see ``broker.py``) and keeps a
heartbeat key alive; the scheduler's recoverer returns the messages of any holder
whose heartbeat expired to the front of their queues, with kombu's own restore.

A worker that stalls longer than ``MEETINGTASKS_HEARTBEAT_TTL`` without dying counts as
dead too: its tasks may then run twice (the documented duplicate window).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import defaultdict

from meetingtasks import broker
from meetingtasks.keys import Keys, get_keys
from meetingtasks.store import get_redis

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps ``consumer:{id}`` alive while this worker process runs."""

    def __init__(self, consumer_id: str, ttl: float, keys: Keys | None = None) -> None:
        self.consumer_id = consumer_id
        self.ttl = ttl
        self.keys = keys or get_keys()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        key = self.keys.consumer_heartbeat(self.consumer_id)
        get_redis().set(key, "1", px=int(self.ttl * 1000))

    def start(self) -> None:
        self.beat()  # before the first message is taken
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        get_redis().delete(self.keys.consumer_heartbeat(self.consumer_id))

    def _run(self) -> None:
        while not self._stopping.wait(self.ttl / 5):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat to Redis failed; retrying", exc_info=True)


def new_consumer_id(hostname: str) -> str:
    """Unique per worker process: a restarted worker with the same name is another one."""
    return f"{hostname}:{socket.gethostname()}:{os.getpid()}"


class Recoverer:
    """Gives the messages of dead consumers back to their queues."""

    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or get_keys()
        self.recovered = 0

    def dead_holders(self) -> dict[str, list[str]]:
        """Consumer id -> delivery tags it holds, for consumers with no heartbeat."""
        client = get_redis()
        held: dict[str, list[str]] = defaultdict(list)
        for tag, owner in client.hgetall(self.keys.unacked_owner()).items():
            held[owner].append(tag)
        if not held:
            return {}
        owners = list(held)
        pipe = client.pipeline(transaction=False)
        for owner in owners:
            pipe.exists(self.keys.consumer_heartbeat(owner))
        alive = pipe.execute()
        return {owner: held[owner] for owner, up in zip(owners, alive, strict=True) if not up}

    def sweep(self) -> int:
        """Restore every message a dead consumer held; returns how many."""
        dead = self.dead_holders()
        if not dead:
            return 0
        from meetingtasks.app import app

        restored = 0
        with app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            for owner, tags in dead.items():
                log.warning("worker %s is gone: returning %d message(s)", owner, len(tags))
                for tag in tags:
                    qos.restore_by_tag(tag)
                    restored += 1
        self.recovered += restored
        return restored


def consumer_started(hostname: str, ttl: float) -> Heartbeat:
    """Called in a worker's main process before it consumes."""
    broker.consumer_id = new_consumer_id(hostname)
    heartbeat = Heartbeat(broker.consumer_id, ttl)
    heartbeat.start()
    return heartbeat
