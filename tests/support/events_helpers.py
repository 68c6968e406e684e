"""Helpers of the event tests: a recording handler, bounded waits, and buses that are
always stopped (their sockets closed) when a test ends, pass or fail."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from meetingtasks.base.keys import Keys
from meetingtasks.events import Event, EventBus, EventBusConfig
from tests.support.waiting import wait_until

#: Generous bound on every wait: long enough for a loaded machine, short enough that a
#: broken feature fails instead of hanging.
WAIT = 30.0

#: Fast loops so tests do not sit out production intervals (claims, backoff, polling).
FAST = EventBusConfig(
    poll_interval=0.2,
    reconnect_initial=0.05,
    reconnect_max=0.5,
    claim_idle=0.5,
    claim_interval=0.2,
    health_check_interval=5.0,
    start_timeout=10.0,
    durable_channels=("durable.*",),
)


def settled(bus: EventBus) -> None:
    """Wait until every event the bus has taken in has been through its handlers (the
    reader hands events out in arrival order, so once a later one was seen, earlier ones
    were handed out too)."""
    wait_until(lambda: bus.stats()["in_flight"] == 0, what="handlers to finish")


class Recorder:
    """A handler that keeps every event it gets; thread-safe."""

    def __init__(
        self, name: str = "recorder", fail: Callable[[Event], bool] = lambda event: False
    ) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._fail = fail
        self.__qualname__ = name  # how the bus's stats name this handler

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
        if self._fail(event):
            raise RuntimeError(f"handler refuses {event.id}")

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    def saw_last(self) -> bool:
        """Whether the event marked ``last=True`` (sent after all others) arrived."""
        return any(e.payload.get("last") for e in self.events)

    def numbers(self, count: int = 0) -> list[int]:
        """The sorted payload ``n`` of the events, after waiting for ``count`` of them."""
        return sorted(cast(int, e.payload["n"]) for e in self.wait_for(count))

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Event]:
        wait_until(lambda: len(self.events) >= count, f"{count} events", timeout)
        return self.events


class Buses:
    """Makes EventBus instances for one test and stops all of them at its end."""

    def __init__(self) -> None:
        self._made: list[EventBus] = []

    def new(self, namespace: str | None = None, **config: Any) -> EventBus:
        keys = Keys(namespace) if namespace else None
        bus = EventBus(replace(FAST, **config), keys=keys)
        self._made.append(bus)
        return bus

    def stop_all(self) -> None:
        for bus in self._made:
            bus.stop()


def event(type: str = "meeting.user_joined", n: int = 0, **payload: object) -> Event:
    return Event(type, {"n": n, **payload}, "tests")
