"""The Celery app every service, worker and tool of meetingtasks shares.

``celery -A meetingtasks worker -Q ai`` finds it here; its settings are in
``celeryconfig.py`` at the top of the repository.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from meetingtasks import ids, sending, submission
from meetingtasks.errors import ConfigurationError, UnknownTaskType
from meetingtasks.keys import get_keys
from meetingtasks.routing import get_route_table
from meetingtasks.settings import get_settings
from meetingtasks.store import get_redis


class MeetingTasksApp(Celery):  # type: ignore[misc]
    """Celery, sending every task through our one send path (``sending.py``).

    ``delay``, ``apply_async``, ``send_task``, retries and canvas all end in
    ``send_task``, so every send is checked the same way and queued in one round trip:
    - the payload must be JSON, within the size limit, and fit the task's signature;
    - ``priority`` may be a Priority, its name or a number 0-9; anything else is refused;
    - ``timeout=S`` sets the soft time limit to S and the hard one S + grace later;
    - ``max_retries=N`` travels in a header and bounds this message's retries;
    - ``idempotency_key=K`` returns the task first sent with K within the window;
    - only JSON is sent (a worker refuses anything else anyway);
    - send and due times travel in headers, for the delay store and priority aging.
    """

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        result_cls = options.pop("result_cls", None) or self.AsyncResult
        add_to_parent = options.pop("add_to_parent", True)
        key = options.pop("idempotency_key", None)
        if key is None:
            sent = sending.send(self, name, args, kwargs, options)
        else:
            key = submission.check_idempotency_key(key)
            sent = self._send_once(key, name, args, kwargs, options)
        result = result_cls(sent.task_id)
        result.ignored = sent.ignore_result
        if add_to_parent:
            parent = self.current_worker_task
            if parent:
                parent.add_trail(result)
        return result

    def _send_once(
        self, key: str, name: str, args: Any, kwargs: Any, options: dict[str, Any]
    ) -> sending.Sent:
        """Send unless ``key`` was used within the window; either way return that task.

        The key is claimed before sending, and released if sending fails, so two
        concurrent submissions with one key queue one task.
        """
        task_id = options.pop("task_id", None) or ids.uuid4()
        redis_key = get_keys().idempotency(key)
        window = get_settings().idempotency_window
        if not get_redis().set(redis_key, task_id, nx=True, ex=window):
            first = get_redis().get(redis_key)
            if first is not None:
                return sending.Sent(first, options.get("ignore_result"))
        try:
            return sending.send(self, name, args, kwargs, {**options, "task_id": task_id})
        except BaseException:
            get_redis().delete(redis_key)
            raise


# Monitoring events go straight to Redis (messages.EventDispatcher says why).
app = MeetingTasksApp(
    "meetingtasks", task_cls="meetingtasks.task:MeetingTask", events="meetingtasks.messages:Events"
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
# Register the service tasks in every process, not only in workers: dispatchers need
# them to check arguments and apply route defaults.
app.loader.import_default_modules()
import meetingtasks.worker  # noqa: E402,F401  (connects the worker signals)
