"""A known backlog in Redis (queued at several priorities, delayed, dead), and the
numbers stats must report for it."""

from __future__ import annotations

import time

from meetingtasks.base.priority import Priority
from meetingtasks.dead_letter_queue import DeadLetter, DeadLetterQueue
from meetingtasks.policies.routing import get_route_table
from tests.worker_tasks import record

EMPTY = {"critical": 0, "high": 0, "normal": 0, "low": 0, "total": 0}
QUEUES = {
    "media": {"critical": 0, "high": 2, "normal": 0, "low": 3, "total": 5},
    "meeting": {"critical": 1, "high": 0, "normal": 0, "low": 0, "total": 1},
    "user": {"critical": 0, "high": 0, "normal": 4, "low": 0, "total": 4},
}
DELAYED = 2
DEAD = 3


def expected_queues() -> dict[str, dict[str, int]]:
    """Every declared queue's depths once ``make_backlog`` ran (no worker reading)."""
    return {queue: QUEUES.get(queue, EMPTY) for queue in get_route_table().queues}


def make_backlog() -> None:
    for _ in range(2):
        record.apply_async(("high",), queue="media", priority=Priority.HIGH)
    for _ in range(3):
        record.apply_async(("low",), queue="media", priority="low")
    record.apply_async(("critical",), queue="meeting", priority=Priority.CRITICAL)
    for _ in range(4):
        record.apply_async(("default priority",), queue="user")  # NORMAL by default
    for _ in range(DELAYED):
        record.apply_async(("later",), queue="media", countdown=3600)
    for n in range(DEAD):
        DeadLetterQueue().add(dead_letter(f"dead-{n}"))


def dead_letter(task_id: str) -> DeadLetter:
    return DeadLetter(
        task_id=task_id, type="test.record", args=["x"], kwargs={}, queue="media", priority=6,
        attempts=1, error_type="Permanent", error="no", traceback=None, failed_at=time.time(),
    )  # fmt: skip
