"""The task status lifecycle, one ``str`` enum written to Redis as is.

    scheduled ─┐
               ├─> queued ─> processing ─┬─> completed
    (retrying)─┘                ^        ├─> failed
                                │        ├─> timeout     (ran past its timeout, expired
                                │        │                before it could start, or its
                                │        │                worker died past its deadline)
                                │        ├─> cancelled
                                └─ retrying <┘

Every process sees the same status (a hash per task, ``keys.status``). A terminal
status never changes again, except when the dead-letter queue sends the task anew.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED}
)

#: Seconds past a run's time limit before the scheduler's monitor calls its worker
#: lost: a live worker's own hard time limit ends the run first.
MONITOR_SLACK = 10.0
