"""Fast recovery of the messages a lost consumer held, and the heartbeat that tells.

With late acknowledgement, a message a worker took stays in kombu's unacknowledged set
until it is acknowledged; only the visibility timeout (an hour by default) would give
it back if the worker never does. Two ways that happens, both handled here:

- **The worker dies** (kill -9, OOM, host lost). Each message is recorded with the id
  of the consumer holding it (``celery_ext/transport.py``), and each worker keeps its consumer id in
  the ``consumers`` roster with a lapse time, renewed every ``ttl / 5``. The
  ``Recoverer`` (a scheduler loop, run by every worker) gives back the messages of any
  consumer that lapsed, to the front of their queues (``store/held.py``).
- **The worker loses its broker connection** and Celery restarts its consumer,
  dropping the messages it had reserved but not started. The new consumer gets a new
  id (a new generation); at that moment the worker keeps the messages of the tasks
  still running under the new id and gives the others back at once.

A worker that stalls longer than ``MEETINGTASKS_HEARTBEAT_TTL`` without dying counts as
lost too: its tasks may then run twice (the documented duplicate window).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.policies import poison
from meetingtasks.store import get_redis, held, script, writebehind

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps this worker's current consumer id (``current()``) alive in the ``consumers``
    roster, and counts the live ones (the scheduler loops spread their sweeps over them)."""

    def __init__(
        self, ttl: float, current: Callable[[], str | None], keys: Keys | None = None
    ) -> None:
        self.ttl = ttl
        self.current = current
        self.keys = keys or get_keys()
        #: Live consumers in the roster at the last beat (at least this one).
        self.live = 1
        #: The ids this worker's consumers had before their last reconnects.
        self._retired: deque[str] = deque(maxlen=16)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, retire: str | None = None) -> None:
        """Renew the current id (dropping ``retire``), prune ids lapsed a TTL ago, and
        count those alive.

        A beat sent as the broker went away rides out the outage inside the client's
        retries and may land after the worker's new consumer retired the id it renews
        (``hand_over``): that id is retired again, or it would count as a second worker
        for a TTL."""
        renewed = self.current() or ""
        self.live = self._send(renewed, retire or "")
        if retire:
            self._retired.append(retire)
        elif renewed in self._retired:
            self.live = self._send("", renewed)

    def _send(self, renew: str, retire: str) -> int:
        args = [time.time(), self.ttl, renew, retire]
        return int(script("heartbeat")([self.keys.consumers()], args))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        current = self.current()
        if current is not None:
            get_redis().zrem(self.keys.consumers(), current)

    def _run(self) -> None:
        while not self._stopping.wait(self.ttl / 5):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat to Redis failed; retrying", exc_info=True)


class Recoverer:
    """A scheduler loop's step: gives the messages of lapsed consumers back."""

    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or get_keys()

    def sweep(self) -> int:
        """Give back every message a lapsed consumer held; returns how many."""
        holders = held.held_by(self.keys)
        if not holders:
            return 0
        alive = set(get_redis().zrangebyscore(self.keys.consumers(), time.time(), "+inf"))
        given = 0
        for owner, tags in holders.items():
            if owner not in alive:
                returned = give_back(self.keys, owner, tags)
                if returned:
                    log.warning("consumer %s is gone: returned %d message(s)", owner, returned)
                given += returned
        return given


def give_back(keys: Keys, owner: str, tags: list[str]) -> int:
    """Give back what ``owner`` held under ``tags``; an entry that cannot be read is set
    aside (``poison.py``), and the rest still go back. How many went back."""
    given = held.give_back(keys, owner, tags)
    for bad in given.unreadable:
        poison.set_aside(bad.entry, bad.reason, f"held by {owner}", delivery_tag=bad.tag, keys=keys)
    return given.returned


def hand_over(
    heartbeat: Heartbeat, previous: str | None, current: str, running: set[str], keys: Keys
) -> None:
    """A worker's new consumer starts: it keeps what still runs (delivery tags in
    ``running``), the rest goes back at once.

    The new id joins the roster first and the old one leaves it last, so no recoverer
    (every worker runs one) ever sees these messages' holder as gone."""
    heartbeat.beat()
    if previous is None:
        return
    writes = writebehind.here()
    if writes is not None:
        writes.flush()  # acknowledgements still waiting count too
    tags = held.held_by(keys).get(previous, [])
    keep = [tag for tag in tags if tag in running]
    held.reassign(keys, keep, current)
    returned = give_back(keys, previous, [tag for tag in tags if tag not in running])
    heartbeat.beat(retire=previous)
    if tags:
        log.warning(
            "consumer restarted: kept %d running message(s), returned %d", len(keep), returned
        )
