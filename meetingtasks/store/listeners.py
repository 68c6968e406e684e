"""Task monitoring events go out only while someone listens.

Celery's task events (task-sent, -received, -started, -succeeded…) are for Flower and
``celery events``; with nobody subscribed, Redis still reads every one of them, about
1.5 KB per task, as much as the task's own messages. Redis's PUBLISH answers how many
listened, so each process publishes them while that number is above zero, and after an
event nobody heard it stays quiet for ``QUIET_SECONDS``, then tries again: a monitor
that starts sees the task events within a second. Worker events (online, heartbeat,
offline) always go out: they are few, and Flower needs them to list the workers.

``MEETINGTASKS_TASK_EVENTS=always`` publishes every task event whoever listens.
"""

from __future__ import annotations

import os
import threading
import time

from meetingtasks.base.settings import get_settings

#: Seconds a process stays quiet after a task event nobody heard.
QUIET_SECONDS = 1.0


class ListenerGate:
    def __init__(self, quiet: float = QUIET_SECONDS, always: bool | None = None) -> None:
        self.quiet = quiet
        #: Publish whoever listens (None: as MEETINGTASKS_TASK_EVENTS says, read at the
        #: first publish).
        self.always = always
        self._quiet_until = 0.0
        self._lock = threading.Lock()

    def open(self) -> bool:
        """Whether to publish a task event now."""
        if self.always is None:
            self.always = get_settings().task_events == "always"
        return self.always or time.monotonic() >= self._quiet_until

    def heard(self, receivers: int) -> None:
        """What a publish answered: how many subscribers got it."""
        with self._lock:
            self._quiet_until = 0.0 if receivers else time.monotonic() + self.quiet


#: This process's gate for task events (a forked process starts with its own).
task_events = ListenerGate()


def _forked() -> None:
    global task_events
    task_events = ListenerGate()


os.register_at_fork(after_in_child=_forked)
