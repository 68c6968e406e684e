"""The Celery app every service, worker and tool of meetingtasks shares.

``celery -A meetingtasks worker -Q ai`` finds it here; its settings are in
``celery_ext/celeryconfig.py``, which also names the service task modules and the worker
hooks (``run/worker.py``) Celery imports in every worker. That module is read by this
app alone: Celery's default app and any other ``Celery()`` in the process keep their own
configuration.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.celery_ext.celery_app import MeetingTasksApp
from meetingtasks.errors import UnknownTaskType
from meetingtasks.policies.routing import get_route_table

# Monitoring events go straight to Redis (``celery_ext/event_dispatcher.py`` says why).
app = MeetingTasksApp(
    "meetingtasks",
    task_cls="meetingtasks.celery_ext.task:MeetingTask",
    events="meetingtasks.celery_ext.event_dispatcher:Events",
    # Celery's current app stays whatever the process made it (a worker of ours sets
    # it to this one as it starts): importing meetingtasks changes no other app's.
    set_as_current=False,
)
# Read when first needed (the first send, a worker's start): importing the package reads
# no setting, so a test plugin can point it at a private Redis first.
app.config_from_object("meetingtasks.celery_ext.celeryconfig")


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
