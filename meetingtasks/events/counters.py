"""Named counters shared by reader and handler threads.

``+=`` on an attribute is not atomic across threads, and stats must add up exactly
(tests check dropped == emitted - processed), so every update takes a lock.
"""

from __future__ import annotations

import threading


class Counters:
    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
