"""The Celery app every service, worker and tool of meetingtasks shares.

``celery -A meetingtasks worker -Q ai`` finds it here; its settings are in
``celeryconfig.py`` at the top of the repository.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from meetingtasks.errors import ConfigurationError, UnknownTaskType
from meetingtasks.routing import get_route_table
from meetingtasks.settings import get_settings

app = Celery("meetingtasks", task_cls="meetingtasks.task:MeetingTask")
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
    get_route_table().get(name)  # raises UnknownTaskType with the known types
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
