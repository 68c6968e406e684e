"""Runtime: the one place a service process starts, stops and measures its parts.

A process (a service, the gateway) runs a few long-lived components with one lifecycle
(``start()``, ``stop()``, ``stats()``). The manager starts them in dependency order and
stops them in reverse, each stop graceful:

1. ``local_bus`` (LocalEventBus) first, because the event bus feeds it through bridges:
   on the way down it stops last and processes everything bridged into it.
2. ``event_bus`` (EventBus): on stop, handlers already handed events finish (durable
   entries are acknowledged), then it disconnects.
3. ``scheduler`` (the scheduler loops), only if asked: the current sweep finishes.
4. components added with ``add()`` (a dispatcher's listener…), in the order added:
   started after the built-in ones they may use, stopped before them.

``stats()`` is one JSON-able dict: the cluster-wide numbers every process reads alike
(``cluster_stats()``, which ``meetingtasks stats`` and the metrics show too) plus this
process's components under ``components``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from meetingtasks.app import app
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.dispatch import TaskDispatcher
from meetingtasks.errors import InvalidOption, StateError
from meetingtasks.events import EventBus, EventBusConfig, LocalEventBus
from meetingtasks.policies.routing import get_route_table
from meetingtasks.policies.scheduling import SchedulerLoops
from meetingtasks.store import inspect
from meetingtasks.store.memory import memory_snapshot

log = logging.getLogger(__name__)


class Component(Protocol):
    """What the manager runs. ``stop()`` must be graceful, and safe whether or not
    ``start()`` ran (the manager stops every component, also after a failed start)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RuntimeConfig:
    #: The event bus's settings (durable channels and stream length from the environment).
    event_bus: EventBusConfig = field(default_factory=EventBusConfig)
    #: The local bus's buffer (events accepted and not yet handled) and worker threads.
    local_buffer_size: int = 1000
    local_workers: int = 4
    #: Run the scheduler loops (due delays, priority aging, recovery) in this process too.
    scheduler: bool = False


class Runtime:
    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.local_bus = LocalEventBus(self.config.local_buffer_size, self.config.local_workers)
        self.event_bus = EventBus(self.config.event_bus)
        self.scheduler = SchedulerLoops.create(app.backend) if self.config.scheduler else None
        self._components: dict[str, Component] = {
            "local_bus": self.local_bus,
            "event_bus": self.event_bus,
        }
        if self.scheduler is not None:
            self._components["scheduler"] = self.scheduler
        self._lock = threading.Lock()
        self._state = "new"

    def add(self, name: str, component: Component) -> None:
        """Run ``component`` too (before ``start()``): started after the ones already
        registered, stopped before them."""
        with self._lock:
            if self._state != "new":
                raise StateError(f"add {name!r} before start(): this manager is {self._state}")
            if name in self._components:
                raise InvalidOption(f"a component named {name!r} is already registered")
            self._components[name] = component

    def start(self) -> None:
        """Start every component in order; if one fails, stop them all and raise."""
        with self._lock:
            if self._state != "new":
                raise StateError(f"this Runtime is {self._state}: create a new one")
            self._state = "running"
            components = list(self._components.items())
        for name, component in components:
            try:
                component.start()
            except Exception:
                log.error("%s failed to start; stopping the others", name)
                self.stop()
                raise
            log.info("started %s", name)

    def stop(self) -> None:
        """Stop every component in reverse order, each letting its in-flight work finish.

        A component that fails to stop is logged and the others still stop; the first
        such error is raised at the end.
        """
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
            components = list(self._components.items())
        first_error: Exception | None = None
        for name, component in reversed(components):
            try:
                component.stop()
            except Exception as exc:
                log.exception("%s failed to stop", name)
                first_error = first_error or exc
            else:
                log.info("stopped %s", name)
        if first_error is not None:
            raise first_error

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """``cluster_stats()`` plus ``components``: each component's own stats, by name."""
        with self._lock:
            components = list(self._components.items())
        return {
            **cluster_stats(),
            "components": {name: component.stats() for name, component in components},
        }


def cluster_stats(keys: Keys | None = None) -> dict[str, Any]:
    """The numbers every process sees alike, JSON-able (layout in docs/operations.md):

    ``queues``: per service queue, messages waiting by priority and in total;
    ``delayed``, ``processing`` (taken by a worker, not acknowledged), ``dlq``, ``malformed``
    (messages set aside: they can never become a task): totals; ``unconsumed``: messages
    on lists nobody reads, where a misconfigured foreign producer puts them (docs/wire.md);
    ``workers``: worker consumers whose heartbeat is alive (cheap: one sorted-set read,
    where Celery's ``inspect().ping()`` would broadcast and wait for every worker);
    ``scheduler``: the scheduler loops' counters; ``dispatcher``: its cluster-wide stats;
    ``memory``: Redis's used and maximum bytes, keys and bytes per key family, bytes a
    finished task leaves (``store/memory.py``).
    """
    keys = keys or get_keys()
    snap = inspect.snapshot(keys, get_route_table().queues, time.time())
    return {
        "namespace": keys.namespace,
        "queues": {
            queue: {
                **{priority.name.lower(): depth for priority, depth in depths.items()},
                "total": sum(depths.values()),
            }
            for queue, depths in snap.depths.items()
        },
        "delayed": snap.delayed,
        "processing": snap.processing,
        "dlq": snap.dead_letters,
        "malformed": snap.malformed,
        "unconsumed": snap.unconsumed,
        "workers": {"online": len(snap.consumers), "ids": snap.consumers},
        "scheduler": snap.scheduler,
        "dispatcher": TaskDispatcher().stats(),
        "memory": memory_snapshot(keys.namespace),
    }
