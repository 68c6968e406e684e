"""TaskScheduler: delayed submission and cancellation, and the scheduler loops.

Delays of any length live in Redis (a message not yet due goes to the delay store, not
to its queue: ``store/queueing.py``), and a loop moves each to its queue when due with
one atomic script. Three more loops age priorities (``aging.py``), give back the
messages of dead workers (``recovery.py``) and declare a timeout for runs whose worker
went silent past their deadline (``TimeoutMonitor``): four small loops with one
lifecycle (``SchedulerService``). Every worker runs them (``worker.py``), and
``meetingtasks scheduler`` runs them apart; each step is atomic, so any number of
processes run them at once without moving or ending a task twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import TimeLimitExceeded

from meetingtasks.app import app
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.loops import Periodic
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.policies import cancellation
from meetingtasks.policies.aging import PriorityAging
from meetingtasks.policies.recovery import Recoverer
from meetingtasks.store import delayed, get_redis
from meetingtasks.store import status as status_store


class TaskScheduler:
    """Submit tasks for later, cancel them, and move them to their queues when due."""

    def __init__(self, keys: Keys | None = None, batch: int = 1000) -> None:
        self.keys = keys or get_keys()
        self.batch = batch

    def submit(
        self,
        type_or_task: str | Task,
        payload: dict[str, Any] | None = None,
        *,
        priority: Priority | str | int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Send a task (now, or after ``countdown`` seconds / at ``eta``); returns its id."""
        name = type_or_task if isinstance(type_or_task, str) else type_or_task.name
        result = app.send_task(
            name,
            kwargs=payload or {},
            priority=priority,
            countdown=countdown,
            eta=eta,
            timeout=timeout,
            max_retries=max_retries,
            idempotency_key=idempotency_key,
        )
        return str(result.id)

    def cancel(self, task_id: str) -> bool:
        """Cancel a delayed, queued or running task; False if it already finished."""
        return cancellation.cancel(app, task_id, self.keys)

    def pending(self) -> int:
        """Delayed tasks not yet due."""
        return delayed.count(self.keys)

    def move_due(self) -> int:
        """One step of the scheduler loop: queue what is due; returns how many."""
        return delayed.move_due(self.keys, time.time(), self.batch)

    def stats(self) -> dict[str, Any]:
        counters = get_redis().hgetall(self.keys.scheduler_stats())
        return {"pending": self.pending(), **{str(k): int(v) for k, v in counters.items()}}


class TimeoutMonitor:
    """Ends as ``timeout`` the runs that outlived their deadline: their worker died or
    hung (a live worker's own hard time limit ends them sooner). The task is also
    cancelled, so a redelivered copy of its message is dropped instead of run late."""

    def __init__(self, keys: Keys | None = None, batch: int = 100) -> None:
        self.keys = keys or get_keys()
        self.batch = batch

    def sweep(self) -> int:
        ttl = get_settings().cancel_ttl
        ended = 0
        for task_id, deadline in status_store.overdue(self.keys, time.time(), self.batch):
            # Claimed by taking it off the deadlines: of several monitors (every worker
            # runs one), only one ends it; given back if ending it fails.
            if not get_redis().zrem(self.keys.deadlines(), task_id):
                continue
            try:
                get_redis().set(self.keys.cancelled(task_id), "timeout", ex=ttl)
                app.backend.mark_as_failure(
                    task_id,
                    TimeLimitExceeded("no result within its time limit: its worker was lost"),
                )
            except BaseException:
                get_redis().zadd(self.keys.deadlines(), {task_id: deadline})
                raise
            ended += 1
        return ended


@dataclass
class SchedulerService:
    """The scheduler process: due delays, priority aging and worker recovery."""

    scheduler: TaskScheduler
    loops: list[Periodic]

    @classmethod
    def create(
        cls, interval: float | None = None, peers: Callable[[], int] | None = None
    ) -> SchedulerService:
        """The four loops; ``peers`` (how many processes run them now) spreads their
        sweeps when every worker runs them (``loops.Periodic``)."""
        settings = get_settings()
        keys = get_keys()
        scheduler = TaskScheduler(keys)
        aging = PriorityAging(settings.priority_aging, keys=keys)
        recoverer = Recoverer(keys)
        monitor = TimeoutMonitor(keys)
        due_interval = interval or settings.scheduler_interval
        return cls(
            scheduler,
            [
                Periodic("due-tasks", _counted(keys, "moved", scheduler.move_due), due_interval,
                         peers),
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
        return {
            **self.scheduler.stats(),
            "loops": {loop.name: loop.stats() for loop in self.loops},
        }


def _counted(keys: Keys, counter: str, step: Any) -> Any:
    """Wrap a loop step so what it did adds up in the cluster-wide scheduler stats."""

    def counted_step() -> int:
        done = int(step())
        if done:
            get_redis().hincrby(keys.scheduler_stats(), counter, done)
        return done

    return counted_step
