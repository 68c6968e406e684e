"""Periodic: a named background thread that runs one step every ``interval`` seconds.

Every small background loop of meetingtasks (priority aging, the delayed-task mover,
timeout detection) has the same lifecycle, so they share it: ``start()`` returns at
once, ``stop()`` lets the current step finish and joins. A step that raises is logged
and the loop goes on (Redis restarts must not kill the scheduler); steps return how
much work they did, and a busy step runs again without waiting.

A loop that every worker runs (``peers``: how many run it now) waits ``interval``
times that many, drawn between half and one and a half of it, as Sidekiq's scheduled
set poller does: N workers together sweep about as often as one process would, and
their sweeps do not fall in step.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Periodic:
    name: str
    step: Callable[[], int]
    interval: float = 1.0
    peers: Callable[[], int] | None = None
    runs: int = 0
    errors: int = 0
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            busy = False
            try:
                busy = self.step() > 0
                self.runs += 1
            except Exception:
                self.errors += 1
                log.exception("%s: step failed; retrying in %.1fs", self.name, self.interval)
            if not busy:
                self._stopping.wait(self.pause())

    def pause(self) -> float:
        """Seconds until the next step when the last one found nothing to do."""
        if self.peers is None:
            return self.interval
        return self.interval * max(1, self.peers()) * random.uniform(0.5, 1.5)

    def stats(self) -> dict[str, object]:
        return {"running": self.running, "runs": self.runs, "errors": self.errors}
