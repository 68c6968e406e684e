"""The Celery app every service, worker and tool of meetingtasks shares.

``celery -A meetingtasks worker -Q ai`` finds it here; its settings are in
``celeryconfig.py`` at the top of the repository.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.base.settings import get_settings
from meetingtasks.celery_ext.celery_app import MeetingTasksApp
from meetingtasks.errors import ConfigurationError, UnknownTaskType
from meetingtasks.policies.routing import get_route_table

# Monitoring events go straight to Redis (messages.EventDispatcher says why).
app = MeetingTasksApp(
    "meetingtasks",
    task_cls="meetingtasks.celery_ext.task:MeetingTask",
    events="meetingtasks.celery_ext.event_dispatcher:Events",
)
app.config_from_object("celeryconfig")
# Celery's apply_async reads this setting on every send, walking each layer of its
# configuration (celeryconfig's layer by getattr, each miss an exception): 7 us here, a
# tenth of a whole send's work. Copied to the top layer, where the lookup finds it first;
# setting it later (tests do) writes there too.
app.conf.task_always_eager = bool(app.conf.task_always_eager)


def route_task(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any
) -> dict[str, Any] | None:
    """Celery router: the queue and default priority of ``name`` from routes/.

    A task registered in this process but absent from routes/ (a service's own
    ``@app.task``), or sent with an explicit declared queue, keeps Celery's routing; a
    name that is none of these is refused, so nothing goes to a queue no worker reads.
    """
    route = get_route_table().find(name)
    if route is not None:
        return {"queue": route.queue, "priority": int(route.priority)}
    if task is not None or name in app.tasks or options.get("queue") is not None:
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
