"""The worker's request of one of our tasks: Celery's, with two failures made the task's
own instead of the whole worker's.

- **Its pool process died under it** (``os._exit``, a segfault, SIGKILL from the OOM
  killer) while the worker lived. Celery with ``task_reject_on_worker_lost`` delivers it
  again, forever, each run killing another process. Here each such run is counted in the
  task's record (``policies/poison.py``); at ``MEETINGTASKS_MAX_WORKER_LOST`` the task
  fails with ``WorkerLost`` (naming the exit code or signal), is acknowledged, goes to the
  dead letters and announces its end, like any failure.
- **A MemoryError.** Celery re-raises it in the main process, which exits and leaves its
  other tasks to recovery. Here it is that task's failure (``OutOfMemory``); the pool
  process, its memory freed as the error unwound, goes on, and the memory ceiling
  (``worker_max_memory_per_child``) replaces it if it stays large.

And the success of a task nobody watches (``policies/tracking.py``: no record) is counted
as it is acknowledged, batched with the worker's other writes.

Selected by ``MeetingTask.Request`` (Celery's name), so other apps' tasks keep Celery's.
Celery 5.7 names relied on (``tests/test_private_api.py`` checks each): ``Task.Request``,
``Request.on_failure`` and ``acknowledge`` (extended), ``Request._already_revoked``,
``_already_cancelled``, ``acknowledged`` and ``_request_dict``,
``celery.worker.state.should_terminate`` and ``successful_requests``.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.exceptions import Terminated
from celery.worker import state as worker_state
from celery.worker.request import Request

from meetingtasks.base import headers as h
from meetingtasks.base.keys import get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import OutOfMemory, WorkerLost
from meetingtasks.policies import poison
from meetingtasks.store import status as status_store
from meetingtasks.store import writebehind

log = logging.getLogger(__name__)


class MeetingRequest(Request):
    def acknowledge(self) -> None:
        """A task nobody watches has no record to end: its success is counted here, in
        the worker's main process, with the others of the next write-behind flush.
        (Celery's per-task Request class replaces ``on_success`` whole; the success is
        read from ``successful_requests``, which it fills just before acknowledging.)"""
        if (
            not self.acknowledged
            and self._request_dict.get(h.UNTRACKED)
            and self.id in worker_state.successful_requests
        ):
            field = "completed:" + status_store.counter_suffix(
                self.delivery_info.get("priority"), self.task_name
            )
            writes = writebehind.here()
            if writes is not None:
                writes.count(get_keys().task_stats(), field)
            else:
                status_store.count(get_keys(), field)
        super().acknowledge()

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        if isinstance(exc, MemoryError):
            exc_info.exception = OutOfMemory(f"MemoryError: {exc}")
        elif self._lost_under_it(exc):
            try:
                runs = poison.count_worker_lost(self.id)
            except Exception:  # Redis away: Celery's redelivery, counted next time
                log.warning("could not count the lost run of %s", self.id, exc_info=True)
                runs = 0
            limit = get_settings().max_worker_lost
            if runs >= limit:
                exc_info.exception = WorkerLost(
                    f"the task's pool process died under it {runs} times, so it is not run "
                    f"again (MEETINGTASKS_MAX_WORKER_LOST={limit}); the last time: {exc}"
                )
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _lost_under_it(self, exc: BaseException) -> bool:
        """Whether the pool process died under this run on its own: not terminated by a
        revoke, nor as the worker stops."""
        if self._already_revoked or self._already_cancelled or worker_state.should_terminate:
            return False
        if isinstance(exc, Terminated):
            return False
        return isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt)
