"""The dead-letter queue: every task that failed for good, ready to run again.

Celery on Redis has none: a task that exhausted its retries or failed with a
non-retryable error leaves only a FAILURE result that expires. Here the result backend
files each such task (``results.py``) with everything needed to send it again.
Browsing and requeueing are admin operations, kept apart from the hot path.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from meetingtasks.base import headers as h
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.store import dead_letters


class DeadLetter(BaseModel):
    """A task that failed for good, as it was sent, with why it failed."""

    task_id: str
    type: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    priority: int | None
    soft_time_limit: float | None = None
    time_limit: float | None = None
    max_retries: int | None = None
    attempts: int
    error_type: str
    error: str
    traceback: str | None
    failed_at: float
    worker: str | None = None

    @classmethod
    def from_request(cls, request: Any, exc: BaseException, traceback: str | None) -> DeadLetter:
        """Build the entry from the Celery request context of the failed run."""
        delivery = getattr(request, "delivery_info", None) or {}
        hard, soft = getattr(request, "timelimit", None) or (None, None)
        max_retries = h.get(request, h.MAX_RETRIES)
        return cls(
            task_id=request.id,
            type=request.task,
            args=list(request.args or ()),
            kwargs=dict(request.kwargs or {}),
            queue=delivery.get("routing_key"),
            priority=delivery.get("priority"),
            soft_time_limit=soft,
            time_limit=hard,
            max_retries=max_retries,
            attempts=(request.retries or 0) + 1,
            error_type=type(exc).__name__,
            error=str(exc),
            traceback=traceback,
            failed_at=time.time(),
            worker=getattr(request, "hostname", None),
        )

    def send_options(self) -> dict[str, Any]:
        """Options that send it again as it was: same id, route, priority and limits."""
        options: dict[str, Any] = {"task_id": self.task_id, "queue": self.queue}
        if self.priority is not None:
            options["priority"] = Priority.parse(self.priority)
        if self.soft_time_limit is not None:
            options["soft_time_limit"] = self.soft_time_limit
        if self.time_limit is not None:
            options["time_limit"] = self.time_limit
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        return options


class DeadLetterQueue:
    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or get_keys()

    def add(self, letter: DeadLetter) -> None:
        dead_letters.add(self.keys, letter.task_id, letter.failed_at, letter.model_dump_json())

    def count(self) -> int:
        return dead_letters.count(self.keys)

    def list(self, limit: int = 50, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        raw = dead_letters.page(self.keys, offset, limit)
        return [DeadLetter.model_validate_json(entry) for entry in raw]

    def get(self, task_id: str) -> DeadLetter | None:
        found = dead_letters.get(self.keys, [task_id])
        return DeadLetter.model_validate_json(found[0]) if found else None

    def requeue(self, n: int | None = None, ids: list[str] | None = None) -> list[str]:
        """Send the ``n`` oldest (or the given ids; default all) again; returns their ids.

        Each is sent before its entry is removed: a crash in between leaves it queued
        *and* still listed (at-least-once), never lost.
        """
        from meetingtasks.app import app

        if ids is not None:
            letters = [DeadLetter.model_validate_json(e) for e in dead_letters.get(self.keys, ids)]
        else:
            letters = self.list(limit=n if n is not None else max(self.count(), 1))
        for letter in letters:
            app.backend.forget(letter.task_id)
            app.send_task(letter.type, letter.args, letter.kwargs, **letter.send_options())
            dead_letters.remove(self.keys, letter.task_id)
        return [letter.task_id for letter in letters]

    def purge(self) -> int:
        """Drop every dead letter; returns how many there were."""
        return dead_letters.purge(self.keys)
