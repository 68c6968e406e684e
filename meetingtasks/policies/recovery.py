"""Fast recovery of the messages a lost consumer held, and the heartbeat that tells.

With late acknowledgement, a message a worker took stays in kombu's unacknowledged set
until it is acknowledged; only the visibility timeout (an hour by default) would give
it back if the worker never does. Two ways that happens, both handled here:

- **The worker dies** (kill -9, OOM, host lost). Each message is held in a hash of
  the consumer that took it (``store/held.py``), and each worker keeps its consumer id
  in the ``consumers`` roster with a lapse time, renewed every ``ttl / 5``. The
  ``Recoverer`` (a scheduler loop, run by every worker) gives back the messages of any
  consumer that lapsed, to the front of their queues, and then drops it from the roster.
- **The worker loses its broker connection** and Celery restarts its consumer,
  dropping the messages it had reserved but not started. The new consumer gets a new
  id (a new generation); at that moment the worker gives those back at once, and keeps
  the previous id alive while the tasks still running under it last.

A worker that stalls longer than ``MEETINGTASKS_HEARTBEAT_TTL`` without dying counts as
lost too: its tasks may then run twice (the documented duplicate window).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.policies import poison
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store import get_redis, held, script, writebehind

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps this worker's current consumer id (``current()``) alive in the ``consumers``
    roster, and counts the live ones (the scheduler loops spread their sweeps over them).

    It also keeps alive the ids of this worker's earlier consumers that still hold tasks
    running across a reconnect (``inherit``), until those tasks end."""

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
        #: Earlier ids of this worker still holding running tasks, renewed with the current.
        self._inherited: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def inherit(self, consumer: str) -> None:
        """Keep ``consumer`` alive while it still holds something."""
        self._inherited.add(consumer)

    def beat(self, retire: str | None = None) -> None:
        """Renew the current id (dropping ``retire``) and the inherited ones still holding
        something, and count those alive.

        A beat sent as the broker went away rides out the outage inside the client's
        retries and may land after the worker's new consumer retired the id it renews
        (``hand_over``): that id is retired again, or it would count as a second worker
        for a TTL."""
        if self._inherited:
            queues = get_route_table().queues
            done = {c for c in self._inherited if not held.count(self.keys, [c], queues)}
            for consumer in done:
                self._inherited.discard(consumer)
                self._send("", consumer)
        renewed = self.current() or ""
        self.live = self._send(renewed, retire or "", *self._inherited)
        if retire:
            self._retired.append(retire)
        elif renewed in self._retired:
            self.live = self._send("", renewed)

    def _send(self, renew: str, retire: str, *also: str) -> int:
        args = [time.time(), self.ttl, renew, retire, *also]
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
    """A scheduler loop's step: gives the messages of lapsed consumers back, then drops
    those consumers from the roster."""

    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or get_keys()

    def sweep(self) -> int:
        """Give back every message a lapsed consumer held; returns how many."""
        now = time.time()
        lapsed = [c for c, lapses in held.roster(self.keys).items() if lapses < now]
        queues = get_route_table().queues
        given = 0
        for consumer in lapsed:
            returned = give_back(self.keys, consumer, queues)
            if returned:
                log.warning("consumer %s is gone: returned %d message(s)", consumer, returned)
            given += returned
            if not held.count(self.keys, [consumer], queues):
                get_redis().zrem(self.keys.consumers(), consumer)
        return given


def give_back(keys: Keys, consumer: str, queues: Iterable[str], keep: Collection[str] = ()) -> int:
    """Give back what ``consumer`` holds, but the delivery tags in ``keep``; an entry
    that cannot be read is set aside (``poison.py``), and the rest still go back. How
    many went back."""
    returned = 0
    for queue, entries in held.holding(keys, consumer, queues).items():
        held_key = keys.held(queue, consumer)
        given = held.give_back(
            keys, queue, held_key, {t: e for t, e in entries.items() if t not in keep}
        )
        for bad in given.unreadable:
            poison.set_aside(bad.entry, f"{bad.reason}, by {consumer}", f"queue {queue}",
                             delivery_tag=bad.tag, held=bad.held, keys=keys)  # fmt: skip
        returned += given.returned
    return returned


def hand_over(
    heartbeat: Heartbeat, previous: str | None, current: str, running: set[str], keys: Keys
) -> None:
    """A worker's new consumer starts: what still runs stays held under the previous id,
    which the heartbeat keeps alive until those tasks end; the rest goes back at once.

    The new id joins the roster first, so no recoverer (every worker runs one) ever sees
    these messages' holder as gone."""
    heartbeat.beat()
    if previous is None:
        return
    writes = writebehind.here()
    if writes is not None:
        writes.flush()  # acknowledgements still waiting count too
    queues = get_route_table().queues
    returned = give_back(keys, previous, queues, keep=running)
    still = held.count(keys, [previous], queues)
    if still:
        heartbeat.inherit(previous)
    heartbeat.beat(retire=None if still else previous)
    if still or returned:
        log.warning("consumer restarted: kept %d running message(s), returned %d", still, returned)
