"""MeetingTask: the base class of every task of the app (``@app.task`` included).

It carries the policies Celery does not give us as we want them:
- the defaults of the task's route in routes/ (timeout, retries, expiry) become the
  task's own Celery options, so ``.delay()`` and ``send_task`` honour them;
- retryable failures are retried with growing, jittered backoff (``policies/retry.py``),
  everything else fails at once;
- a task cancelled while it waited is never run (``policies/cancellation.py``), and a
  running one can ask ``self.cancelled()`` between steps.

Private names of Celery 5.7 relied on (``tests/test_private_api.py`` checks each):
``Task._get_exec_options`` (overridden), ``celery.app.task.extract_exec_options``.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.app.task import extract_exec_options
from celery.exceptions import Ignore

from meetingtasks.base import headers
from meetingtasks.base.settings import get_settings
from meetingtasks.celery_ext import sending
from meetingtasks.policies.cancellation import REASON, is_cancelled
from meetingtasks.policies.retry import RETRYABLE_ERRORS, retry_delay
from meetingtasks.policies.routing import Route, get_route_table
from meetingtasks.policies.submission import hard_limit

DEFAULT_MAX_RETRIES = 3


class MeetingTask(Task):
    #: A lost pool process or a MemoryError is this task's failure (request.py).
    Request = "meetingtasks.celery_ext.request:MeetingRequest"
    # Arguments are checked against the signature in MeetingTasksApp.send_task, for
    # every way of sending, with our error type.
    typing = False

    @property
    def route(self) -> Route | None:
        return get_route_table().find(self.name)

    @property
    def priority(self) -> int | None:
        route = self.route
        return int(route.priority) if route else self.app.conf.task_default_priority

    @property
    def soft_time_limit(self) -> float | None:
        route = self.route
        return route.timeout if route else None

    @property
    def time_limit(self) -> float | None:
        route = self.route
        return hard_limit(route.timeout, sending.limits(self.app).timeout_grace) if route else None

    @property
    def max_retries(self) -> int:
        route = self.route
        return route.max_retries if route else DEFAULT_MAX_RETRIES

    @property
    def expires(self) -> float | None:
        route = self.route
        return route.expires if route else None

    def _get_exec_options(self) -> dict[str, Any]:
        """Celery computes these once per task and keeps them; ours come from the route
        table, which ``TaskDispatcher.register_route`` may change at run time (a new
        Route object), so they are kept per route. Unset ones are left out (a None
        default is no default). The route's retention travels as an option of ours."""
        route = self.route
        cached = self.__dict__.get("_exec_options")
        if cached is None or cached[0] is not route:
            options = {k: v for k, v in extract_exec_options(self).items() if v is not None}
            if route is not None and route.retention is not None:
                options["retention"] = route.retention
            cached = self.__dict__["_exec_options"] = (route, options)
        return dict(cached[1])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RETRYABLE_ERRORS as exc:
            if self.request.called_directly:
                raise
            delay = retry_delay(self.request.retries, get_settings())
            # expires=None: the expiry guards a task that could not *start* in time;
            # a task that started and failed must not be dropped on its retry.
            raise self.retry(
                exc=exc, countdown=delay, max_retries=self.request_max_retries(), expires=None
            ) from exc

    def cancelled(self) -> bool:
        """Whether this run was cancelled: long tasks check between steps and stop early."""
        return is_cancelled(self.request.id)

    def stop_if_cancelled(self) -> None:
        """End this run as REVOKED if it was cancelled (no failure, no dead letter)."""
        if self.cancelled():
            self.backend.mark_as_revoked(self.request.id, reason=REASON, request=self.request)
            raise Ignore()

    def request_max_retries(self) -> int:
        """This message's retry budget: its own header, else the route's default."""
        value = headers.get(self.request, headers.MAX_RETRIES)
        return self.max_retries if value is None else int(value)
