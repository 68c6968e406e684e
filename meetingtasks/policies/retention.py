"""Retention: how long a finished task's record stays in Redis, by who can still want it.

Plain Celery keeps nothing for a task whose result is ignored; keeping every record for
a day costs a busy platform tens of gigabytes. Here a record outlives its task only as
long as someone may read it:

- nobody awaits it (no dispatcher waiting, no client session, result ignored):
  ``MEETINGTASKS_RETENTION_UNWATCHED`` (a minute: long enough to look it up by id);
- a client session submitted it: the session's resume window
  (``MEETINGTASKS_GATEWAY_IDLE_TIMEOUT``), so a client that reconnects still finds it;
- a dispatcher or ``AsyncResult.get()`` may read it: ``MEETINGTASKS_RETENTION_RESULT``;
- it failed or timed out: ``MEETINGTASKS_RETENTION_FAILED`` (its dead letter stays
  until purged).

A result awaited by a dispatcher or ``AsyncResult.get()`` is kept only until it is read:
once ``wait()`` or ``get()`` returned it or its callback ran, what is left of its
window shrinks to the unwatched one.

A route's ``retention`` (routes/*.toml) and a call's (``apply_async(retention=...)``,
``TaskRequest.retention``) override the choice; the send path puts the route's in the
message (header ``mt_retention``) as it does its timeout, and the record keeps it. A
task not over yet (queued, running, retrying) keeps its record
``MEETINGTASKS_STATUS_TTL`` after its last change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from meetingtasks.base.keys import Keys
from meetingtasks.base.settings import Settings, get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.store import status as store

FAILURES = (TaskStatus.FAILED, TaskStatus.TIMEOUT)


@dataclass(frozen=True)
class Retention:
    """Seconds records are kept, from the settings named above."""

    while_running: int
    unwatched: int
    result: int
    failed: int
    session: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            settings.status_ttl, settings.retention_unwatched, settings.retention_result,
            settings.retention_failed, max(1, round(settings.gateway_idle_timeout)),
        )  # fmt: skip

    def seconds(
        self,
        status: TaskStatus,
        *,
        override: float | str | None = None,
        session: bool = False,
        awaited: bool = False,
        result_kept: bool = False,
    ) -> int:
        """Seconds the record of a task that moved to ``status`` is kept from now
        (``override``: the retention its route or call chose, header ``mt_retention``)."""
        if status is TaskStatus.RETRYING:
            return self.while_running
        if override:
            return max(1, round(float(override)))
        if status in FAILURES:
            return self.failed
        if session:
            return self.session
        if awaited or result_kept:
            return self.result
        return self.unwatched

    def read(self, keys: Keys, task_ids: list[str]) -> None:
        """Whoever awaited these tasks has read their results: what is left of their
        window shrinks to the unwatched one, where nothing else keeps them
        (``lua/release.lua``)."""
        store.release(keys, task_ids, self.unwatched)


@cache
def policy() -> Retention:
    """This process's retention, read from the settings once."""
    return Retention.from_settings(get_settings())
