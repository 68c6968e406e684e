"""Waiting in tests: for a condition, for tasks' journal entries, for the queues."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from tests.worker_tasks import read_journal

T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    what: str = "the condition",
    timeout: float = 60.0,
    ignoring: tuple[type[BaseException], ...] = (),
    interval: float = 0.02,
) -> T:
    """``check()``'s first true value, asked every ``interval`` for ``timeout`` seconds
    (``ignoring``: errors that count as not yet, an HTTP server still starting, say);
    AssertionError naming ``what`` if it never comes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except ignoring:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_for_journal(name: str, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    """The entries of journal ``name`` once ``count`` tasks wrote there."""
    return wait_until(
        lambda: entries if len(entries := read_journal(name)) >= count else None,
        f"{count} tasks of journal {name} to run",
        timeout,
        interval=0.1,
    )


def queued_ids(redis: Any, queue: str) -> list[str]:
    """Ids of the tasks waiting on ``queue``, highest priority first."""
    keys = get_keys()
    return [
        json.loads(raw)["headers"]["id"]
        for p in Priority
        for raw in redis.lrange(keys.queue(queue, p), 0, -1)
    ]
