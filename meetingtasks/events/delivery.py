"""Running subscribers' handlers: one subscription's bookkeeping, and the shared pool.

Handlers run on a thread pool so a slow or failing one never holds up the others or the
reader. The pool is bounded: a reader that would push past ``max_in_flight`` waits, which
slows reading (Redis buffers, or the stream keeps the entries) instead of growing memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from meetingtasks.events.config import DeliveryMode
from meetingtasks.events.counters import Counters
from meetingtasks.events.envelope import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], object]


@dataclass(eq=False)
class Subscription:
    """One handler on one channel or pattern; the handle ``EventBus.unsubscribe`` takes."""

    channel: str
    handler: Handler
    mode: DeliveryMode
    pattern: bool = False
    group: str | None = None
    consumer: str | None = None
    counters: Counters = field(default_factory=lambda: Counters("delivered", "handled", "failed"))

    @property
    def handler_name(self) -> str:
        return getattr(self.handler, "__qualname__", None) or repr(self.handler)

    def run(self, event: Event) -> bool:
        """Call the handler; an exception is logged and counted, never raised. True if it
        succeeded (a durable entry is acknowledged only then)."""
        self.counters.add("delivered")
        try:
            self.handler(event)
        except Exception:
            self.counters.add("failed")
            log.exception(
                "event handler %s failed on %s event %s (channel %s)",
                self.handler_name, event.type, event.id, self.channel,
            )  # fmt: skip
            return False
        self.counters.add("handled")
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "pattern": self.pattern,
            "mode": str(self.mode),
            "handler": self.handler_name,
            "group": self.group,
            "consumer": self.consumer,
            **self.counters.snapshot(),
        }


class HandlerPool:
    """A thread pool with a bound on work handed to it and not yet finished."""

    def __init__(self, workers: int, max_in_flight: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mt-event")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._idle = threading.Condition()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def submit(self, work: Callable[[], object], cancel: threading.Event) -> bool:
        """Queue ``work``, waiting for a free slot; False (not queued) once ``cancel`` is set."""
        while not self._slots.acquire(timeout=0.1):
            if cancel.is_set():
                return False
        with self._idle:
            self._in_flight += 1
        self._executor.submit(self._run, work)
        return True

    def _run(self, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            # Handlers are wrapped by Subscription.run; this is a bug in our own glue,
            # which must not vanish into an unread Future.
            log.exception("event dispatch failed")
        finally:
            self._slots.release()
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Take no more work and wait up to ``timeout`` seconds (None: no limit) for what
        was queued to finish; False if handlers were still running when it gave up."""
        self._executor.shutdown(wait=False)
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)
