"""Several model servers behind one node, each reply from the one with the most free slots.

    meetingtasks ai-node --upstream openai+http://10.0.0.5:8080/v1 \
        --upstream openai+http://10.0.0.6:8080/v1        # two llama-server processes
    meetingtasks ai-node --backend llama --upstream openai+http://gpu:8000/v1

A member's slots are the replies it generates at once: an OpenAI upstream's ``streams``
(its server's parallel slots), llama's ``slots``, unbounded for a backend that does not
say. The pool counts the replies each member is generating, so its free slots are its
slots less those; a new reply goes to the member with the most, the first of equals in
turn. A member that answers -10 (unreachable, busy) before its first delta is skipped for
``skip_for`` seconds and the reply goes to the next one; once deltas went out, an error is
the reply's. The node reports each member's slots, replies in progress and free slots in
its stats (``backend.members``), and their sum as ``backend.free_slots``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meetingtasks.errors import ConfigurationError
from meetingtasks.llm.protocol import ErrorCode
from meetingtasks.node.backends import Backend, BackendError, Generation


def slots_of(backend: Backend) -> float:
    """How many replies ``backend`` generates at once, by its own account (inf: no limit)."""
    return float(backend.slots) if backend.slots else math.inf


@dataclass
class _Member:
    backend: Backend
    slots: float
    busy: int = 0
    skipped_until: float = 0.0

    @property
    def free(self) -> float:
        return self.slots - self.busy


class BackendPool(Backend):
    def __init__(self, backends: Sequence[Backend], *, skip_for: float = 2.0) -> None:
        if len(backends) < 2:
            raise ConfigurationError("a backend pool needs at least two backends")
        self._members = [_Member(b, slots_of(b)) for b in backends]
        self.skip_for = skip_for
        self._lock = threading.Lock()
        self._turns = itertools.count()
        self.slots = _number(sum(member.slots for member in self._members))

    def describe(self) -> str:
        return "pool of " + "; ".join(m.backend.describe() for m in self._members)

    def health(self) -> dict[str, Any]:
        with self._lock:
            members = [
                {
                    **m.backend.health(),
                    "backend": m.backend.describe(),
                    "slots": _number(m.slots),
                    "replying": m.busy,
                    "free_slots": _number(m.free),
                    "skipped_for": round(max(0.0, m.skipped_until - time.monotonic()), 3),
                }
                for m in self._members
            ]
        free = sum(m.free for m in self._members)
        return {"free_slots": _number(free), "members": members}

    def setup(self, options: Mapping[str, Any]) -> None:
        for member in self._members:
            member.backend.setup(options)

    def generate(self, request: Generation) -> Iterator[str]:
        tried: set[int] = set()
        while True:
            index = self._take(tried)
            member = self._members[index]
            started = False
            try:
                for delta in member.backend.generate(request):
                    started = True
                    yield delta
                return
            except BackendError as exc:
                if (
                    started
                    or exc.code != ErrorCode.NOT_AVAILABLE
                    or len(tried) == len(self._members)
                ):
                    raise
                member.skipped_until = time.monotonic() + self.skip_for
            finally:
                with self._lock:
                    member.busy -= 1

    def close(self) -> None:
        for member in self._members:
            member.backend.close()

    def _take(self, tried: set[int]) -> int:
        """The member for the next attempt, counted busy: not yet tried, not skipped if
        any is not, the most free slots, equals in turn."""
        now, turn = time.monotonic(), next(self._turns)
        with self._lock:
            left = [i for i in range(len(self._members)) if i not in tried]
            ready = [i for i in left if self._members[i].skipped_until <= now] or left
            count = len(self._members)
            index = max(ready, key=lambda i: (self._members[i].free, -((i - turn) % count)))
            self._members[index].busy += 1
        tried.add(index)
        return index


def _number(value: float) -> int | None:
    return None if math.isinf(value) else int(value)
