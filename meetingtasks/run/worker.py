"""What every worker process of the app does besides running tasks.

Connected to Celery's worker signals when the app is imported, so plain
``celery -A meetingtasks worker`` gets it, in its main process:
- consumer ids and the heartbeat that let the other workers recover the messages of a
  worker that died, and the worker itself recover those its consumer dropped on a
  broker reconnect (``recovery.py``);
- the scheduler loops (due delays and retries, recovery, priority aging, the timeout
  monitor), their sweeps spread over the workers online, so workers alone are a whole
  system (``MEETINGTASKS_EMBEDDED_SCHEDULER``);
- the write-behind of acknowledgements and events (``store/writebehind.py``).
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_shutdown
from celery.worker.state import active_requests

from meetingtasks.base.settings import get_settings
from meetingtasks.policies.recovery import WorkerConsumers
from meetingtasks.scheduler import SchedulerService
from meetingtasks.store import writebehind

_consumers: list[WorkerConsumers] = []
_loops: list[SchedulerService] = []


def _running_tags() -> set[str]:
    """Delivery tags of the tasks this worker is running now."""
    return {request.message.delivery_tag for request in list(active_requests)}


@worker_init.connect
def _start(sender: Any = None, **_: Any) -> None:
    consumers = WorkerConsumers(sender.hostname, get_settings().heartbeat_ttl, _running_tags)
    consumers.start()
    _consumers.append(consumers)
    if get_settings().embedded_scheduler:
        loops = SchedulerService.create(peers=lambda: consumers.heartbeat.live)
        loops.start()
        _loops.append(loops)
    writebehind.worker_writes = writebehind.WriteBehind()
    writebehind.worker_writes.start()


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    while _loops:
        _loops.pop().stop()
    while _consumers:
        _consumers.pop().stop()
    if writebehind.worker_writes is not None:
        writebehind.worker_writes.stop()
