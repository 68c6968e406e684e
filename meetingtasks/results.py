"""Celery's Redis result backend, which also files each final failure as a dead letter.

The backend is where Celery records a task's final FAILURE, both for a failure inside
the task and for a hard time limit handled by the worker's main process, with the
request context of the run at hand: the one place that sees every such end. Filing
the dead letter is a policy on top, so its failure is logged, never fatal to the task.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from meetingtasks.dlq import DeadLetter, DeadLetterQueue

log = logging.getLogger(__name__)


class DeadLetteringMixin:
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
        result = super().mark_as_failure(  # type: ignore[misc]
            task_id, exc, traceback, request, store_result, call_errbacks, state
        )
        if request is not None and getattr(request, "task", None):
            try:
                DeadLetterQueue().add(DeadLetter.from_request(request, exc, traceback))
            except Exception:
                log.exception("could not file dead letter of task %s", task_id)
        return result


class ResultBackend(DeadLetteringMixin, RedisBackend):  # type: ignore[misc]
    pass


class SentinelResultBackend(DeadLetteringMixin, SentinelBackend):  # type: ignore[misc]
    pass


def result_backend_for(url: str) -> str:
    """The ``result_backend`` setting: our backend class for this Redis URL."""
    cls = "SentinelResultBackend" if url.startswith("sentinel://") else "ResultBackend"
    return f"meetingtasks.results:{cls}+{url}"
