"""What every worker process of the app does besides running tasks.

Connected to Celery's worker signals when the app is imported, so plain
``celery -A meetingtasks worker`` gets it: the heartbeat that lets the scheduler
recover the messages of a worker that died (recovery.py).
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_shutdown

from meetingtasks.recovery import Heartbeat, consumer_started
from meetingtasks.settings import get_settings

_heartbeats: list[Heartbeat] = []


@worker_init.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    _heartbeats.append(consumer_started(sender.hostname, get_settings().heartbeat_ttl))


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()
