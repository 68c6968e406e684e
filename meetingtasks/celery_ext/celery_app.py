"""MeetingTasksApp: Celery, with every send going through our one send path.

The app instance is made in ``meetingtasks/app.py``; this is its class, an override of
Celery's ``send_task`` (a public method, meant to be overridden), of its ``Worker``
class (``queue_worker.py``) and of the kombu connection class its ``amqp`` makes
(``transport.BrokerConnection``), all through Celery's public class attributes.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.result import AsyncResult

from meetingtasks.base import ids
from meetingtasks.base.keys import get_keys
from meetingtasks.celery_ext import sending
from meetingtasks.celery_ext.transport import BrokerConnection
from meetingtasks.policies import retention, submission
from meetingtasks.store import get_redis

log = logging.getLogger(__name__)


class MeetingTasksApp(Celery):
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

    amqp_cls = "meetingtasks.celery_ext.celery_app:BrokerAMQP"  # Celery's name

    @cached_property
    def AsyncResult(self) -> Any:  # Celery's name
        """Celery's AsyncResult, whose get() lets retention shorten what it read."""
        return self.subclass_with_self("meetingtasks.celery_ext.celery_app:AwaitedResult")

    @cached_property
    def Worker(self) -> Any:  # Celery's name
        """The worker, taking its pool and concurrency from its queues (queue_worker.py)."""
        return self.subclass_with_self("meetingtasks.celery_ext.queue_worker:QueueWorker")

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
        window = sending.idempotency_window(self)
        if not get_redis().set(redis_key, task_id, nx=True, ex=window):
            first = get_redis().get(redis_key)
            if first is not None:
                return sending.Sent(str(first), options.get("ignore_result"))
        try:
            return sending.send(self, name, args, kwargs, {**options, "task_id": task_id})
        except BaseException:
            get_redis().delete(redis_key)
            raise


class BrokerAMQP(AMQP):
    """Celery's messaging helper, making the app's broker connections ours."""

    Connection = BrokerConnection


class AwaitedResult(AsyncResult):
    """A result that ``get()`` returned is no longer awaited: its record is kept the
    short window retention gives a read result (a failure raises, and stays)."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        value = super().get(*args, **kwargs)
        try:
            retention.policy().read(get_keys(), [self.id])
        except Exception:
            log.warning("could not shorten the record of %s after get()", self.id, exc_info=True)
        return value
