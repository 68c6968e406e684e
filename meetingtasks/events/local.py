"""LocalEventBus: the in-process signal bus (no Redis), for events inside one service.

``emit`` never blocks the caller by default: it puts the event in a bounded buffer, and
when the buffer is full the event is dropped and counted (a slow handler must not stall a
request thread). A caller that prefers back-pressure passes ``wait=True`` (optionally
with a timeout). N worker threads take events from the buffer and run every handler whose
type pattern matches (``meeting.user_joined``, ``meeting.*``, ``*``); an exception in a
handler is logged and counted and the other handlers still run.

``stop()`` refuses new events, lets the workers finish everything already accepted,
then ends them; so, after stop, ``processed + dropped == total``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from meetingtasks.errors import InvalidEvent, InvalidOption, StateError
from meetingtasks.events.envelope import Event

log = logging.getLogger(__name__)

LocalHandler = Callable[[Event], object]

_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]-]{1,128}$")


class LocalEventBus:
    def __init__(self, buffer_size: int = 1000, workers: int = 4) -> None:
        if buffer_size < 1 or workers < 1:
            raise InvalidOption("LocalEventBus needs buffer_size >= 1 and workers >= 1")
        self.buffer_size = buffer_size
        self.workers = workers
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._buffer: deque[Event] = deque()
        self._handlers: list[tuple[str, LocalHandler]] = []
        self._matching: dict[str, tuple[LocalHandler, ...]] = {}
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._total = self._processed = self._failed = self._dropped = self._busy = 0

    def on(self, type_pattern: str, handler: LocalHandler) -> None:
        """Call ``handler(event)`` for every event whose type matches ``type_pattern``
        (an exact type, or a glob such as ``meeting.*`` or ``*``)."""
        if not isinstance(type_pattern, str) or not _TYPE_PATTERN.match(type_pattern):
            raise InvalidEvent(
                f"bad event type pattern {type_pattern!r}: use a dotted type such as "
                "'meeting.user_joined', or a glob such as 'meeting.*' or '*'"
            )
        if not callable(handler):
            raise InvalidEvent(f"handler must be callable, not {type(handler).__name__}")
        with self._lock:
            self._handlers.append((str(type_pattern), handler))
            self._matching.clear()

    def emit(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        source: str = "local",
        *,
        wait: bool = False,
        timeout: float | None = None,
        **fields: Any,
    ) -> bool:
        """Queue a new event (``fields``: meeting_id, user_id, trace_id …); True if accepted.

        A bad type or payload raises ``InvalidEvent`` (a bug in the caller, not load).
        """
        return self.publish(Event(type, payload, source, **fields), wait=wait, timeout=timeout)

    def publish(self, event: Event, *, wait: bool = False, timeout: float | None = None) -> bool:
        """Queue an existing envelope (e.g. one bridged from the EventBus); True if accepted.

        Full buffer: dropped and counted at once, or with ``wait`` after up to ``timeout``
        seconds (None: as long as it takes). After ``stop()`` every event is dropped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._total += 1
            while not self._closing and len(self._buffer) >= self.buffer_size:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not wait or (remaining is not None and remaining <= 0):
                    break
                self._not_full.wait(remaining)
            if self._closing or len(self._buffer) >= self.buffer_size:
                self._dropped += 1
                return False
            self._buffer.append(event)
            self._not_empty.notify()
            return True

    def start(self) -> None:
        with self._lock:
            if self._closing:
                raise StateError("this LocalEventBus was stopped: create a new one")
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._work, name=f"mt-local-event-{n}", daemon=True)
                for n in range(self.workers)
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Refuse new events, process every accepted one, then end the workers. Waits up to
        ``timeout`` seconds (None: until done); past it, workers finish in the background."""
        with self._lock:
            if self._closing:
                return
        self.start()  # a bus stopped before it started still owes its accepted events
        with self._lock:
            self._closing = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self._total,
                "processed": self._processed,
                "failed": self._failed,
                "dropped": self._dropped,
                "queue_depth": len(self._buffer),
                "in_progress": self._busy,
                "buffer_size": self.buffer_size,
                "workers": self.workers,
                "running": bool(self._threads) and not self._closing,
            }

    def __enter__(self) -> LocalEventBus:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- workers ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._buffer and not self._closing:
                    self._not_empty.wait()
                if not self._buffer:
                    return  # closing, and everything accepted was taken
                event = self._buffer.popleft()
                self._not_full.notify()
                self._busy += 1
                handlers = self._handlers_for(event.type)
            failures = sum(not self._call(handler, event) for handler in handlers)
            with self._lock:
                self._busy -= 1
                self._processed += 1
                self._failed += failures

    def _handlers_for(self, event_type: str) -> tuple[LocalHandler, ...]:
        """Matching handlers, in registration order (cached per type; caller holds the lock)."""
        found = self._matching.get(event_type)
        if found is None:
            found = tuple(h for pattern, h in self._handlers if fnmatchcase(event_type, pattern))
            self._matching[event_type] = found
        return found

    @staticmethod
    def _call(handler: LocalHandler, event: Event) -> bool:
        try:
            handler(event)
        except Exception:
            log.exception("local event handler %r failed on %s %s", handler, event.type, event.id)
            return False
        return True
