"""What every worker process of the app does besides running tasks.

Connected to Celery's worker signals when a worker of the app imports it (``imports``),
so plain ``celery -A meetingtasks worker`` gets it, in its main process. Celery's signals
are global: a worker of another app in the same process is left alone.
- consumer ids and the heartbeat that let the other workers recover the messages of a
  worker that died, and the worker itself recover those its consumer dropped on a
  broker reconnect (``recovery.py``);
- the scheduler loops (due delays and retries, recovery, priority aging, the timeout
  monitor), their sweeps spread over the workers online, so workers alone are a whole
  system (``MEETINGTASKS_EMBEDDED_SCHEDULER``);
- the write-behind of acknowledgements and events (``store/writebehind.py``);
- for each queue it consumes, the wait on that queue's inbox, where producers without
  our package put tasks (``policies/foreign.py``, ``docs/wire.md``);
- the ``task.malformed`` event for each message set aside (``policies/poison.py``), and
  a message Celery itself refused set aside with its reason;
- traces and JSON logs when asked for (``base/tracing.py``, ``celery_ext/logs.py``), and
  the span of each task's wait on its queue (``celery_ext/task_tracing.py``).

In each prefork pool process: it leaves the worker's process group, so a SIGTERM sent
to the group stops the worker warmly (``celery_ext/pool_child.py``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import current_app
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_prerun,
    task_rejected,
    worker_init,
    worker_process_init,
    worker_shutdown,
)

from meetingtasks.app import app
from meetingtasks.base import tracing
from meetingtasks.base.keys import get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.celery_ext import logs, pool_child, task_tracing, transport
from meetingtasks.celery_ext.worker_state import running_delivery_tags
from meetingtasks.events import Event, publisher
from meetingtasks.policies import foreign, poison, recovery
from meetingtasks.policies.scheduling import SchedulerLoops
from meetingtasks.store import queueing, writebehind


class WorkerExtras:
    """What a worker's main process runs beside Celery's consumer, started and stopped
    with it: consumer ids and their heartbeat, the scheduler loops, the write-behind."""

    def __init__(self, worker: Any) -> None:
        settings = get_settings()
        self.keys = get_keys()
        base = f"{worker.hostname}:{socket.gethostname()}:{os.getpid()}"
        self.heartbeat = recovery.Heartbeat(
            settings.heartbeat_ttl, transport.current_consumer, self.keys
        )
        transport.consume_as(base, self.hand_over)
        self.loops = (
            SchedulerLoops.create(app.backend, peers=lambda: self.heartbeat.live)
            if settings.embedded_scheduler
            else None
        )
        consumed = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        accept = worker.app.conf.accept_content
        self.inboxes = [
            foreign.InboxForwarder(self.keys, queue, settings.status_ttl, accept)
            for queue in consumed
        ]

    def start(self) -> None:
        self.heartbeat.start()
        if self.loops is not None:
            self.loops.start()
        writebehind.start_in_worker()
        poison.announcers.append(announce_malformed)
        for forwarder in self.inboxes:
            forwarder.start()

    def stop(self) -> None:
        for forwarder in self.inboxes:
            forwarder.stop()
        if announce_malformed in poison.announcers:
            poison.announcers.remove(announce_malformed)
        if self.loops is not None:
            self.loops.stop()
        self.heartbeat.stop()
        writebehind.stop_in_worker()

    def hand_over(self, previous: str | None, current: str) -> None:
        recovery.hand_over(self.heartbeat, previous, current, running_delivery_tags(), self.keys)


def announce_malformed(task_id: str | None, source: str | None, reason: str) -> None:
    """The EventBus event of a message set aside (channel ``poison.MALFORMED_CHANNEL``)."""
    payload = {"task_id": task_id, "source": source, "reason": reason}
    event = Event(poison.MALFORMED_EVENT, payload, "worker", trace_id=task_id)
    publisher().publish(poison.MALFORMED_CHANNEL, event)


_started: list[WorkerExtras] = []


@worker_init.connect
def _start(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "app", None) is not app:
        return
    tracing.setup("meetingtasks-worker")
    process = WorkerExtras(sender)
    process.start()
    _started.append(process)


@worker_shutdown.connect
def _stop(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "app", None) is not app:
        return
    while _started:
        _started.pop().stop()


@task_rejected.connect
def _rejected(sender: Any = None, message: Any = None, exc: Any = None, **_: Any) -> None:
    """Celery refused a message the transport's checks let through: set it aside with
    Celery's reason instead of letting it vanish with its status never final."""
    if getattr(sender, "app", None) is not app or message is None:
        return
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
    raw = queueing.to_json(getattr(message, "_raw", None) or {"body": repr(message.body)})
    source = f"queue {message.delivery_info.get('routing_key')}"
    poison.set_aside(raw, f"Celery refused it: {exc!r}", source, task_id=task_id)


@worker_process_init.connect
def _pool_process(**_: Any) -> None:
    if current_app._get_current_object() is app:
        pool_child.leave_worker_group()
        tracing.setup("meetingtasks-worker")


@after_setup_logger.connect
@after_setup_task_logger.connect
def _logging_set_up(logger: Any = None, **_: Any) -> None:
    """JSON lines with the task's fields, when MEETINGTASKS_LOG_FORMAT=json: Celery sets
    its logging up in the main process and again in every pool process."""
    if logger is not None:
        logs.apply(logger)


@task_prerun.connect
def _run_starts(sender: Any = None, **_: Any) -> None:
    """The span of the time the task waited on its queue, when tracing is on."""
    if tracing.active() and getattr(sender, "app", None) is app:
        task_tracing.record_queued(sender.request)
