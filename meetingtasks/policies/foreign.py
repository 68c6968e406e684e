"""Tasks from producers without our package: plain Celery, celery-node, any Celery
protocol 2 client (``docs/wire.md``).

They push a task message on a queue's inbox (``Keys.inbox``). Every worker of the queue
waits on it (``InboxForwarder``, one thread and one connection per queue it consumes):
each message is moved atomically onto the queue's landing list, then adopted, as our
own send path would have queued it: checked (``message_check.py``; what can never become
a task is set aside, ``poison.py``), its missing fields filled in, put on its queue at its
priority (or in the delay store when its ``eta`` is ahead) with its status record and a
doorbell token, in one step that takes it off the landing list (two workers racing on it
adopt it once). A worker that dies between the move and the adoption leaves it on the
landing list, which every forwarder sweeps when its inbox is quiet.

An adopted task is marked ``FOREIGN``: its kept result is also stored as Celery's Redis
backend stores one, where its client reads it (``lua/finish.lua``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from typing import Any

from celery.utils.time import maybe_iso8601
from kombu.serialization import prepare_accept_content

from meetingtasks.base import headers as h
from meetingtasks.base.keys import Keys
from meetingtasks.base.priority import Priority
from meetingtasks.policies import message_check, poison, tracking
from meetingtasks.store import inbox, queueing

log = logging.getLogger(__name__)

#: What a foreign message without a priority runs at (Celery's default would be the
#: highest; ours, as for our own sends).
DEFAULT_PRIORITY = Priority.NORMAL


def adopt(keys: Keys, queue: str, raw: bytes, accept: Collection[str], status_ttl: int) -> bool:
    """Adopt ``raw``, a message on the landing list of ``queue`` (its record kept
    ``status_ttl`` seconds while the task is not over); False if it was set aside, or
    another worker adopted it first."""
    checked = message_check.check(raw, accept)
    landing = keys.landing(queue)
    if isinstance(checked, message_check.Refused):
        poison.set_aside(
            raw, checked.reason, f"inbox {queue}", task_id=checked.task_id, landing=landing,
            keys=keys,
        )  # fmt: skip
        return False
    headers, properties = checked["headers"], checked["properties"]
    step = _step(properties.get("priority"))
    properties["priority"] = step
    properties["delivery_info"] = {"exchange": "", "routing_key": queue}
    headers[h.FOREIGN] = 1
    headers.setdefault(h.ENQUEUED_AT, time.time())
    eta = headers.get("eta")
    if eta is not None:
        headers[h.DUE_AT] = maybe_iso8601(eta).timestamp()
    if not tracking.watched(headers):
        headers[h.UNTRACKED] = 1
    return queueing.put_task(keys, queue, step, checked, status_ttl, claim=(landing, raw))


def _step(priority: int | None) -> int:
    """The step of a Celery priority number (0-9, above 9 the lowest), ours by default."""
    if priority is None:
        return int(DEFAULT_PRIORITY)
    return int(Priority.parse(min(priority, 9)))


class InboxForwarder:
    """Waits on one queue's inbox and adopts what arrives; a thread with a connection of
    its own, started and stopped with the worker (``run/worker.py``)."""

    def __init__(
        self,
        keys: Keys,
        queue: str,
        status_ttl: int,
        accept_content: Collection[str] = ("json",),
    ) -> None:
        self.keys = keys
        self.queue = queue
        self.status_ttl = status_ttl
        self.accept = prepare_accept_content(list(accept_content))
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def start(self) -> None:
        self._client = inbox.waiting_client()
        self._thread = threading.Thread(target=self._run, name=f"inbox-{self.queue}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(inbox.WAIT_SECONDS + 5)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        self._sweep()
        while not self._stopping.is_set():
            try:
                raw = inbox.wait_for_one(self._client, self.keys, self.queue)
                if raw is None:
                    self._sweep()
                else:
                    self._adopt(raw)
            except Exception:  # Redis away (a restart, a failover): wait, then again
                log.warning("waiting on the inbox of %s failed; retrying", self.queue,
                            exc_info=True)  # fmt: skip
                self._stopping.wait(1.0)

    def _sweep(self) -> None:
        """Adopt what a worker moved out of the inbox and never adopted (it died)."""
        for raw in inbox.landed(self.keys, self.queue):
            self._adopt(raw)

    def _adopt(self, raw: bytes) -> None:
        try:
            adopt(self.keys, self.queue, raw, self.accept, self.status_ttl)
        except Exception as exc:  # not left to fail every sweep again
            log.exception("could not adopt a message from the inbox of %s", self.queue)
            poison.set_aside(raw, f"it could not be adopted: {exc!r}", f"inbox {self.queue}",
                             landing=self.keys.landing(self.queue), keys=self.keys)  # fmt: skip
