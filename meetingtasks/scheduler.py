"""TaskScheduler: delayed submission and cancellation.

Delays of any length live in Redis (a message not yet due goes to the delay store, not
to its queue: ``store/queueing.py``), and the scheduler loops every worker runs move
each to its queue when due with one atomic script (``policies/scheduling.py``).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from celery import Task

from meetingtasks.app import app
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.policies import cancellation
from meetingtasks.store import delayed


class TaskScheduler:
    """Submit tasks for later, cancel them, and move them to their queues when due."""

    def __init__(self, keys: Keys | None = None, batch: int = 1000) -> None:
        self.keys = keys or get_keys()
        self.batch = batch
        self.cancel_ttl = get_settings().cancel_ttl

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
        return cancellation.cancel(app, task_id, self.keys, self.cancel_ttl)

    def pending(self) -> int:
        """Delayed tasks not yet due."""
        return delayed.count(self.keys)

    def move_due(self) -> int:
        """One step of the scheduler loop: queue what is due; returns how many."""
        return delayed.move_due(self.keys, time.time(), self.batch)

    def stats(self) -> dict[str, Any]:
        return {"pending": self.pending(), **delayed.scheduler_counters(self.keys)}
