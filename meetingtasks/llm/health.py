"""How each inference node has been doing, as one client sees it: whom to skip, and stats.

A node that fails (unreachable, silent, crashed, or answering a transient error code) is
skipped for a while that doubles with each consecutive failure (``skip_base`` up to
``skip_max`` seconds) and is trusted again after its next success. Skipped nodes are still
tried, last, when every other node failed too: better a slow answer than none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeHealth:
    address: str
    skip_base: float = 1.0
    skip_max: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    wall: Callable[[], float] = field(default=time.time, repr=False)
    requests: int = 0
    failures: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    _skipped_until: float = 0.0

    def skipped_for(self) -> float:
        """Seconds this node is still skipped (0 when it is not)."""
        return max(0.0, self._skipped_until - self.clock())

    def record_success(self) -> None:
        self.requests += 1
        self.consecutive_failures = 0
        self._skipped_until = 0.0
        self.last_success = self.wall()

    def record_failure(self, error: BaseException) -> None:
        """The node could not serve: skip it for a while that grows with each failure."""
        self.requests += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.last_failure = self.wall()
        self.last_error = str(error)
        delay = self.skip_base * 2.0 ** min(self.consecutive_failures - 1, 32)
        self._skipped_until = self.clock() + min(self.skip_max, delay)

    def record_error(self, error: BaseException) -> None:
        """The node answered, but with an error retrying cannot fix: it stays in use."""
        self.requests += 1
        self.errors += 1
        self.last_error = str(error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: state is unknown (never used), up, or down (last attempt failed)."""
        skipped_for = self.skipped_for()
        state = "down" if self.consecutive_failures else "up" if self.requests else "unknown"
        return {
            "address": self.address,
            "state": state,
            "skipped_until": self.wall() + skipped_for if skipped_for else None,
            "consecutive_failures": self.consecutive_failures,
            "last_success": self.last_success,
            "last_failure": self.last_failure,
            "last_error": self.last_error,
            "requests": self.requests,
            "failures": self.failures,
            "errors": self.errors,
        }


def failover_order(nodes: Sequence[NodeHealth], start: int) -> list[int]:
    """Indexes of the nodes to try, in order: those not skipped round robin from ``start``
    (so calls spread over them), then the skipped ones, the soonest back first."""
    rotation = [(start + offset) % len(nodes) for offset in range(len(nodes))]
    ready = [index for index in rotation if not nodes[index].skipped_for()]
    skipped = sorted(
        (index for index in rotation if nodes[index].skipped_for()),
        key=lambda index: nodes[index].skipped_for(),
    )
    return ready + skipped
