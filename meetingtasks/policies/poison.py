"""Poison: what cannot run is quarantined, never fatal to a worker, never rerun forever.

- **A message that can never become a task** (``policies/message_check.py`` and
  ``lua/fetch.lua`` say why) goes to the malformed list with its reason and its raw
  bytes (``store/malformed.py``). Its task, where an id can be read, ends ``failed``
  with that reason, whoever waits on it is told (a dispatcher, a client session), and a
  ``task.malformed`` event is published (``announcers``: the worker publishes it on the
  EventBus, ``run/worker.py``).
- **A task whose pool process dies under it** (an exit, a signal, the OOM killer) while
  the worker lives is delivered again, as Celery does; each such run is counted in the
  task's record (``worker_lost``), and at ``MEETINGTASKS_MAX_WORKER_LOST`` it fails
  with ``WorkerLost`` instead and goes to the dead letters (``celery_ext/request.py``).
  A whole worker killed from outside counts nothing: its main process dies with its
  children, and its messages come back through recovery (``recovery.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.status import TaskStatus
from meetingtasks.policies import tracking
from meetingtasks.store import malformed
from meetingtasks.store import status as status_store

log = logging.getLogger(__name__)

#: The event published for each message set aside, and its EventBus channel.
MALFORMED_EVENT = "task.malformed"
MALFORMED_CHANNEL = "tasks"

#: Called with (task id or None, where it was found, reason) for each message set aside.
Announce = Callable[[str | None, str | None, str], None]
announcers: list[Announce] = []


def set_aside(
    raw: bytes | str,
    reason: str,
    source: str | None,
    *,
    task_id: str | None = None,
    delivery_tag: str | None = None,
    held: str | None = None,
    landing: str | None = None,
    keys: Keys | None = None,
) -> bool:
    """Quarantine ``raw`` (held in ``held`` under ``delivery_tag``, or on the ``landing``
    list) for ``reason``; False if someone else already took it. Never raises for the
    status report or the event: the message is set aside whatever they do."""
    keys = keys or get_keys()
    if not malformed.set_aside(
        keys, raw, reason, source, task_id=task_id, delivery_tag=delivery_tag, held=held,
        landing=landing,
    ):  # fmt: skip
        return False
    _ended(task_id, reason, source, keys)
    return True


def report_set_aside(header: dict[str, object], keys: Keys | None = None) -> None:
    """What follows a message ``lua/fetch.lua`` set aside, from its entry's header: its
    task ends failed, and the event goes out."""
    task_id = header.get("task_id")
    _ended(
        task_id if isinstance(task_id, str) else None,
        str(header.get("reason")),
        str(header.get("source")),
        keys or get_keys(),
    )


def _ended(task_id: str | None, reason: str, source: str | None, keys: Keys) -> None:
    log.error("set aside a message from %s that cannot run (task %s): %s", source, task_id, reason)
    if task_id is not None:
        try:
            tracking.report(task_id, TaskStatus.FAILED, error=f"Malformed: {reason}", keys=keys)
        except Exception:
            log.exception("could not mark the malformed task %s failed", task_id)
    for announce in announcers:
        try:
            announce(task_id, source, reason)
        except Exception:
            log.exception("could not announce the malformed message of task %s", task_id)


def count_worker_lost(task_id: str, keys: Keys | None = None) -> int:
    """Count one more run of ``task_id`` whose pool process died under it; the runs so far."""
    return status_store.count_worker_lost(keys or get_keys(), task_id)
