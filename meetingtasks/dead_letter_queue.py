"""The dead-letter queue: every task that failed for good, ready to run again.

Celery on Redis has none: a task that exhausted its retries or failed with a
non-retryable error leaves only a FAILURE result that expires. Here the result backend
files each such task (``policies/final_failure.py``) with everything needed to send it
again. Browsing and requeueing are admin operations, kept apart from the hot path.
"""

from __future__ import annotations

import builtins

from meetingtasks.app import app
from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.policies.final_failure import DeadLetter, file
from meetingtasks.store import dead_letters

__all__ = ["DeadLetter", "DeadLetterQueue"]


class DeadLetterQueue:
    def __init__(self, keys: Keys | None = None) -> None:
        self.keys = keys or get_keys()

    def add(self, letter: DeadLetter) -> None:
        file(letter, self.keys)

    def count(self) -> int:
        return dead_letters.count(self.keys)

    def list(self, limit: int = 50, offset: int = 0) -> builtins.list[DeadLetter]:
        """Dead letters, oldest first."""
        raw = dead_letters.page(self.keys, offset, limit)
        return [DeadLetter.model_validate_json(entry) for entry in raw]

    def get(self, task_id: str) -> DeadLetter | None:
        found = dead_letters.get(self.keys, [task_id])
        return DeadLetter.model_validate_json(found[0]) if found else None

    def requeue(
        self, n: int | None = None, ids: builtins.list[str] | None = None
    ) -> builtins.list[str]:
        """Send the ``n`` oldest (or the given ids; default all) again; returns their ids.

        Each is sent before its entry is removed: a crash in between leaves it queued
        *and* still listed (at-least-once), never lost.
        """
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
