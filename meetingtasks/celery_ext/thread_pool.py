"""TimedThreadPool: Celery's threads pool, with the soft and hard time limits kept.

Celery's threads pool ignores time limits: a thread cannot be killed as a child process
can. This one keeps both, as Dramatiq's TimeLimit does for its worker threads: one watcher
thread per worker process raises ``SoftTimeLimitExceeded`` in a task's thread at its soft
limit and ``TimeLimitExceeded`` at its hard limit (then again every second until the task
lets go). Either ends the task ``timeout``; the thread goes back to the pool and the
worker goes on.

The exception arrives when the thread next runs Python code, so a task blocked in one
system call sees it only when that call returns. Our own waits are short (the LLM client
polls its sockets at least every second, Redis calls have socket timeouts); a task's own
code should bound its waits too.

Names of Celery 5.7 relied on (``tests/test_private_api.py`` checks each):
``celery.concurrency.thread.TaskPool.on_apply`` (overridden; the ``soft_timeout`` and
``timeout`` keywords ``BasePool.apply_async`` passes it from the task's request).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery.concurrency.thread import TaskPool
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

log = logging.getLogger(__name__)

TIME_LIMITS = (SoftTimeLimitExceeded, TimeLimitExceeded)
#: Seconds between two raises of the hard limit in a thread that has not let go.
HARD_REPEAT = 1.0


@dataclass(order=True)
class _Limit:
    at: float
    number: int
    thread: int = field(compare=False)
    exception: type[BaseException] = field(compare=False)
    repeat: bool = field(compare=False, default=False)


class TimeLimitWatch:
    """Raises time-limit exceptions in the threads whose tasks ran past their limits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._due: list[_Limit] = []
        #: Thread id -> ticket of the task it runs (a thread runs one task at a time, so
        #: a new task's ticket supersedes any earlier one).
        self._running: dict[int, int] = {}
        self._numbers = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="time-limits", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def begin(self, soft: float | None, hard: float | None) -> int | None:
        """Watch the calling thread; the ticket to give to ``end``, None if no limit."""
        if not soft and not hard:
            return None
        now, thread = self.clock(), threading.get_ident()
        ticket = next(self._numbers)
        with self._changed:
            self._running[thread] = ticket
            if soft:
                heapq.heappush(self._due, _Limit(now + soft, ticket, thread, SoftTimeLimitExceeded))
            if hard:
                heapq.heappush(
                    self._due, _Limit(now + hard, ticket, thread, TimeLimitExceeded, repeat=True)
                )
            self._changed.notify()
        return ticket

    def end(self, ticket: int | None) -> None:
        """The task of ``ticket`` ended: no more exceptions for its thread.

        One raised just as the task returned may surface here; it is swallowed and the
        ticket ended all the same, so it neither escapes into the pool's own code nor
        follows the thread into its next task."""
        while ticket is not None:
            try:
                thread = threading.get_ident()
                with self._changed:
                    if self._running.get(thread) == ticket:
                        del self._running[thread]
                        _raise_in(thread, None)  # withdraws one sent and not yet raised
                ticket = None
            except TIME_LIMITS:
                continue

    def _watch(self) -> None:
        with self._changed:
            while not self._stopped:
                now = self.clock()
                while self._due and self._due[0].at <= now:
                    limit = heapq.heappop(self._due)
                    if self._running.get(limit.thread) != limit.number:
                        continue  # ended meanwhile
                    log.warning(
                        "task thread %s ran past its %s limit: raising %s in it",
                        limit.thread, "hard" if limit.repeat else "soft",
                        limit.exception.__name__,
                    )  # fmt: skip
                    _raise_in(limit.thread, limit.exception)
                    if limit.repeat:
                        limit.at = now + HARD_REPEAT
                        heapq.heappush(self._due, limit)
                wait = self._due[0].at - now if self._due else None
                self._changed.wait(wait)


def _raise_in(thread: int, exception: type[BaseException] | None) -> None:
    """Have ``thread`` raise ``exception`` at its next Python instruction (None: cancel)."""
    affected = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(exception) if exception else None
    )
    if affected > 1:  # pragma: no cover - CPython's documented misuse guard
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), None)


class TimedThreadPool(TaskPool):
    """``-P threads``, and the ``ai`` queue's default pool, with time limits kept.

    Its threads share one result backend (Celery's ``result_backend_thread_safe``): by
    default Celery makes one per thread, and 500 threads made 500 backends, each with a
    Redis connection pool of its own, before their first results. The threads only store
    results through it (Redis's client is thread-safe); none waits on one
    (``task_disable_sync_subtasks``)."""

    def on_start(self) -> None:
        self.app.conf.result_backend_thread_safe = True
        self.limits = TimeLimitWatch()
        self.limits.start()
        super().on_start()

    def on_stop(self) -> None:
        super().on_stop()
        self.limits.stop()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        limits = self.limits

        def limited(*target_args: Any, **target_kwargs: Any) -> Any:
            ticket = limits.begin(soft_timeout, timeout)
            try:
                return target(*target_args, **target_kwargs)
            finally:
                limits.end(ticket)

        return super().on_apply(limited, args, kwargs, callback, accept_callback, **options)
