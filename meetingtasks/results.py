"""Celery's Redis result backend, which also tracks our status and files dead letters.

The backend is where Celery records how every run ended: success, retry, revocation
and final failure, both for a failure inside the task and for a hard time limit handled
by the worker's main process, with the request context of the run at hand. The one
place that sees every end, so our policies hook here: status tracking (``tracking.py``)
and the dead-letter queue (``dlq.py``). A failing policy is logged, never fatal to the
task.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from meetingtasks import tracking
from meetingtasks.dlq import DeadLetter, DeadLetterQueue
from meetingtasks.status import TaskStatus

log = logging.getLogger(__name__)


class TrackingMixin:
    def mark_as_done(
        self,
        task_id: str,
        result: Any,
        request: Any = None,
        store_result: bool = True,
        state: str = states.SUCCESS,
    ) -> Any:
        outcome = super().mark_as_done(task_id, result, request, store_result, state)  # type: ignore[misc]
        _policy(tracking.report, task_id, TaskStatus.COMPLETED, request, result=result)
        return outcome

    def mark_as_failure(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> Any:
        outcome = super().mark_as_failure(  # type: ignore[misc]
            task_id, exc, traceback, request, store_result, call_errbacks, state
        )
        status = tracking.failure_status(exc)
        _policy(tracking.report, task_id, status, request, error=tracking.describe(exc))
        if request is not None and getattr(request, "task", None):
            _policy(DeadLetterQueue().add, DeadLetter.from_request(request, exc, traceback))
        return outcome

    def mark_as_retry(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        state: str = states.RETRY,
    ) -> Any:
        outcome = super().mark_as_retry(task_id, exc, traceback, request, store_result, state)  # type: ignore[misc]
        _policy(
            tracking.report, task_id, TaskStatus.RETRYING, request, error=tracking.describe(exc)
        )
        return outcome

    def mark_as_revoked(
        self,
        task_id: str,
        reason: str = "",
        request: Any = None,
        store_result: bool = True,
        state: str = states.REVOKED,
    ) -> Any:
        outcome = super().mark_as_revoked(task_id, reason, request, store_result, state)  # type: ignore[misc]
        # A task that expired before it could start timed out; any other revoke cancelled it.
        status = TaskStatus.TIMEOUT if reason == "expired" else TaskStatus.CANCELLED
        _policy(tracking.report, task_id, status, request, error=reason)
        return outcome


def _policy(function: Any, *args: Any, **kwargs: Any) -> None:
    try:
        function(*args, **kwargs)
    except Exception:
        log.exception("%s failed for %s", getattr(function, "__name__", function), args[:1])


class ResultBackend(TrackingMixin, RedisBackend):  # type: ignore[misc]
    pass


class SentinelResultBackend(TrackingMixin, SentinelBackend):  # type: ignore[misc]
    pass


def result_backend_for(url: str) -> str:
    """The ``result_backend`` setting: our backend class for this Redis URL."""
    cls = "SentinelResultBackend" if url.startswith("sentinel://") else "ResultBackend"
    return f"meetingtasks.results:{cls}+{url}"
