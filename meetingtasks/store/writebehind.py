"""Write-behind for a worker's main process: acknowledgements, counters, monitoring events.

Per task, a Celery worker's main process would send four writes of its own: the
acknowledgement and three events (received, started, succeeded), each a round trip
of its own. None needs to happen before the process goes on: a tracked task's result
and status are already stored by the task itself, in the same step that releases its
message (``lua/finish.lua``), and events are monitoring. So they are queued here and
flushed together every few milliseconds, in one pipeline: acknowledgements one command
per held hash, counters one per counter (``count``), however many tasks they cover.

A task nobody watches (``policies/tracking.py``: no record) ends here: its
acknowledgement releases its message and its success is counted. A worker killed before
a flush loses a few events (Pub/Sub loses those anyway) and, for those tasks, their
acknowledgement and count: recovery gives their messages back and they run again, the
documented duplicate window (a few milliseconds of such tasks per kill).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline

from meetingtasks.store import get_redis

log = logging.getLogger(__name__)

Write = Callable[[Pipeline], Any]
#: Told the replies of the commands its write added, once they ran.
OnReplies = Callable[[list[Any]], Any]
#: A write of many items at once (acknowledgements: one command for all their tags).
GroupWrite = Callable[[Pipeline, list[Any]], Any]


#: This process's id, kept current across forks (asked on every ack and event, and a
#: system call costs a few microseconds on a virtual machine).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class WriteBehind:
    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._writes: list[tuple[Write, OnReplies | None]] = []
        self._groups: dict[GroupWrite, list[Any]] = {}
        #: (hash, field) -> what the next flush adds to it (HINCRBY), aggregated.
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @property
    def running_here(self) -> bool:
        """Started, in this process (a forked pool process inherits the object only)."""
        return self._thread is not None and self._pid == _pid

    def start(self) -> None:
        self._pid = _pid
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def add(self, write: Write, on_replies: OnReplies | None = None) -> None:
        with self._lock:
            self._writes.append((write, on_replies))
        self._wake.set()

    def add_to_group(self, write: GroupWrite, item: Any) -> None:
        """Add ``item`` to what the next flush passes to ``write``, once, with the rest."""
        with self._lock:
            self._groups.setdefault(write, []).append(item)
        self._wake.set()

    def count(self, key: str, field: str, n: int = 1) -> None:
        """Add ``n`` to counter ``field`` of the hash ``key`` with the next flush (one
        command per counter and flush, however many events it counts)."""
        with self._lock:
            self._counts[key, field] = self._counts.get((key, field), 0) + n
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.flush()

    def flush(self) -> None:
        with self._lock:
            writes, self._writes = self._writes, []
            groups, self._groups = self._groups, {}
            counts, self._counts = self._counts, {}
        if not writes and not groups and not counts:
            return
        pipe = get_redis().pipeline(transaction=False)
        told: list[tuple[int, int, OnReplies]] = []
        for write, on_replies in writes:
            start = len(pipe.command_stack)
            write(pipe)
            if on_replies is not None:
                told.append((start, len(pipe.command_stack), on_replies))
        for group_write, items in groups.items():
            group_write(pipe, items)
        for (key, field), n in counts.items():
            pipe.hincrby(key, field, n)
        try:
            replies = pipe.execute()
        except Exception:
            with self._lock:  # keep them for the next flush
                self._writes[:0] = writes
                for group_write, items in groups.items():
                    self._groups.setdefault(group_write, [])[:0] = items
                for counter, n in counts.items():
                    self._counts[counter] = self._counts.get(counter, 0) + n
            raise
        for start, end, on_replies in told:
            try:
                on_replies(replies[start:end])
            except Exception:
                log.warning("a write-behind reply handler failed", exc_info=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            self._stopping.wait(self.interval)  # gather what comes in the meantime
            try:
                self.flush()
            except Exception:
                log.warning("write-behind flush failed; retrying", exc_info=True)


class _Worker:
    """The worker main process's write-behind (``start_in_worker``); None elsewhere."""

    writes: WriteBehind | None = None


def start_in_worker() -> WriteBehind:
    """Start this worker main process's write-behind."""
    _Worker.writes = WriteBehind()
    _Worker.writes.start()
    return _Worker.writes


def stop_in_worker() -> None:
    """Flush and stop it (at the worker's shutdown)."""
    if _Worker.writes is not None:
        _Worker.writes.stop()


def here() -> WriteBehind | None:
    """The write-behind to use in this process: the worker main process's, else None
    (clients and the pool's forked processes, which inherit the object only, write at
    once)."""
    writes = _Worker.writes
    return writes if writes is not None and writes.running_here else None
