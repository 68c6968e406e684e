"""Runs that outlived their deadline: their worker died or hung.

A live worker's own hard time limit ends a run sooner; this catches the runs nobody is
left to end. Each is declared ``timeout`` through the result backend, and the task is
cancelled too, so a redelivered copy of its message is dropped instead of run late.
"""

from __future__ import annotations

import time
from typing import Any

from celery.exceptions import TimeLimitExceeded

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.store import get_redis
from meetingtasks.store import status as status_store


class TimeoutMonitor:
    """One sweep ends the overdue runs, at most ``batch`` at a time, through ``backend``
    (the app's result backend: it records the failure and files the dead letter)."""

    def __init__(self, backend: Any, keys: Keys | None = None, batch: int = 100) -> None:
        self.backend = backend
        self.keys = keys or get_keys()
        self.batch = batch
        self.cancel_ttl = get_settings().cancel_ttl

    def sweep(self) -> int:
        ended = 0
        for task_id, deadline in status_store.overdue(self.keys, time.time(), self.batch):
            # Claimed by taking it off the deadlines: of several monitors (every worker
            # runs one), only one ends it; given back if ending it fails.
            if not get_redis().zrem(self.keys.deadlines(), task_id):
                continue
            try:
                get_redis().set(self.keys.cancelled(task_id), "timeout", ex=self.cancel_ttl)
                self.backend.mark_as_failure(
                    task_id,
                    TimeLimitExceeded("no result within its time limit: its worker was lost"),
                )
            except BaseException:
                get_redis().zadd(self.keys.deadlines(), {task_id: deadline})
                raise
            ended += 1
        return ended
