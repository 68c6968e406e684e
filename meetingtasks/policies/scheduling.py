"""The scheduler loops: four small sweeps with one lifecycle.

Due delays and retries go to their queues (``store/delayed.py``), priorities age
(``aging.py``), a dead worker's messages come back (``recovery.py``), and runs whose
worker went silent past their deadline end as ``timeout`` (``timeouts.py``). Every worker
runs them (``run/worker.py``), and ``meetingtasks scheduler`` runs them apart; each step
is atomic in Redis, so any number of processes run them at once without moving or
ending a task twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.loops import Periodic
from meetingtasks.base.settings import get_settings
from meetingtasks.policies.aging import PriorityAging
from meetingtasks.policies.recovery import Recoverer
from meetingtasks.policies.timeouts import TimeoutMonitor
from meetingtasks.store import delayed, get_redis

#: Due tasks moved per sweep.
DUE_BATCH = 1000


@dataclass
class SchedulerLoops:
    """The four loops of one process, started and stopped together."""

    keys: Keys
    loops: list[Periodic]

    @classmethod
    def create(
        cls,
        backend: Any,
        interval: float | None = None,
        peers: Callable[[], int] | None = None,
    ) -> SchedulerLoops:
        """The four loops; ``backend`` (the app's result backend) records timeouts;
        ``peers`` (how many processes run them now) spreads their sweeps when every
        worker runs them (``loops.Periodic``)."""
        settings = get_settings()
        keys = get_keys()
        aging = PriorityAging(settings.priority_aging, keys=keys)
        recoverer = Recoverer(keys)
        monitor = TimeoutMonitor(backend, keys)

        def move_due() -> int:
            return delayed.move_due(keys, time.time(), DUE_BATCH)

        due_interval = interval or settings.scheduler_interval
        return cls(
            keys,
            [
                Periodic("due-tasks", _counted(keys, "moved", move_due), due_interval, peers),
                Periodic("priority-aging", _counted(keys, "promoted", aging.sweep), 1.0, peers),
                Periodic("recovery", _counted(keys, "recovered", recoverer.sweep), 2.0, peers),
                Periodic("timeouts", _counted(keys, "timed_out", monitor.sweep), 1.0, peers),
            ],
        )  # fmt: skip

    def start(self) -> None:
        for loop in self.loops:
            loop.start()

    def stop(self) -> None:
        for loop in reversed(self.loops):
            loop.stop()

    @property
    def running(self) -> bool:
        return all(loop.running for loop in self.loops)

    def stats(self) -> dict[str, Any]:
        """Delays pending, what the loops did deployment-wide, and each loop here."""
        return {
            "pending": delayed.count(self.keys),
            **delayed.scheduler_counters(self.keys),
            "loops": {loop.name: loop.stats() for loop in self.loops},
        }


def _counted(keys: Keys, counter: str, step: Callable[[], int]) -> Callable[[], int]:
    """Wrap a loop step so what it did adds up in the deployment-wide scheduler stats."""

    def counted_step() -> int:
        done = int(step())
        if done:
            get_redis().hincrby(keys.scheduler_stats(), counter, done)
        return done

    return counted_step
