"""The Celery app every service, worker and tool of meetingtasks shares.

``celery -A meetingtasks worker -Q ai`` finds it here; its settings are in
``celeryconfig.py`` at the top of the repository.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from meetingtasks.errors import ConfigurationError, InvalidOption, UnknownTaskType
from meetingtasks.priority import Priority
from meetingtasks.routing import get_route_table
from meetingtasks.settings import get_settings
from meetingtasks.task import DUE_AT_HEADER, ENQUEUED_AT_HEADER, MAX_RETRIES_HEADER


class MeetingTasksApp(Celery):  # type: ignore[misc]
    """Celery, with the per-message options every send of the app understands.

    Every way of sending a task (``delay``, ``apply_async``, ``send_task``, retries,
    canvas) goes through ``send_task``, so this is the one place they are checked:
    - ``priority`` may be a Priority, its name or its step; anything else is refused;
    - ``timeout=S`` sets the soft time limit to S and the hard one S + grace later;
    - ``max_retries=N`` travels in a header and bounds this message's retries;
    - only JSON is sent (a worker refuses anything else anyway);
    - the time the message becomes runnable travels in a header, for priority aging.
    """

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        now = time.time()
        headers = {**(options.get("headers") or {}), ENQUEUED_AT_HEADER: now}
        due = _due_time(options.get("eta"), options.get("countdown"), now)
        if due is not None:
            headers[DUE_AT_HEADER] = due
        options["headers"] = headers
        priority = options.get("priority")
        if priority is not None:
            options["priority"] = int(Priority.parse(priority))
        serializer = options.get("serializer")
        if serializer not in (None, "json"):
            raise InvalidOption(f"serializer {serializer!r} refused: meetingtasks sends JSON only")
        timeout = options.pop("timeout", None)
        if timeout is not None:
            if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
                raise InvalidOption(
                    f"timeout must be a positive number of seconds, not {timeout!r}"
                )
            options["soft_time_limit"] = timeout
            options["time_limit"] = timeout + get_settings().timeout_grace
        max_retries = options.pop("max_retries", None)
        if max_retries is not None:
            if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
                raise InvalidOption(f"max_retries must be a whole number >= 0, not {max_retries!r}")
            headers[MAX_RETRIES_HEADER] = max_retries
        return super().send_task(name, args, kwargs, **options)


def _due_time(eta: Any, countdown: Any, now: float) -> float | None:
    """Unix time a delayed message becomes runnable, from Celery's eta or countdown."""
    if eta is not None:
        when = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return float(when.timestamp())
    if countdown is not None:
        return now + float(countdown)
    return None


app = MeetingTasksApp("meetingtasks", task_cls="meetingtasks.task:MeetingTask")
app.config_from_object("celeryconfig")


def route_task(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any
) -> dict[str, Any] | None:
    """Celery router: the queue and default priority of ``name`` from routes/.

    A task registered in this process but absent from routes/ (a service's own
    ``@app.task``) keeps Celery's default routing; a name that is neither is refused,
    so nothing is sent to a queue no worker reads.
    """
    route = get_route_table().find(name)
    if route is not None:
        return {"queue": route.queue, "priority": int(route.priority)}
    if task is not None or name in app.tasks:
        return None
    get_route_table().get(name)  # raises UnknownTaskType naming the known types
    raise UnknownTaskType(name)  # pragma: no cover - get() always raises here


def check_configuration() -> None:
    """Refuse settings that break at-least-once delivery, before any task runs."""
    settings = get_settings()
    longest = max((r.timeout for r in get_route_table()), default=0.0)
    if longest + settings.timeout_grace >= settings.visibility_timeout:
        raise ConfigurationError(
            f"MEETINGTASKS_VISIBILITY_TIMEOUT={settings.visibility_timeout}s is not longer than "
            f"the longest task timeout ({longest}s + {settings.timeout_grace}s grace): a running "
            "task would be delivered to a second worker. Raise the visibility timeout."
        )


check_configuration()
# Register the service tasks in every process, not only in workers: dispatchers need
# them to check arguments and apply route defaults.
app.loader.import_default_modules()
