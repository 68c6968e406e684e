"""Accepted means replicated, where asked: a write confirmed on replicas before it counts.

Redis replicates asynchronously, so a write the primary took just before it died may
never reach the replica that takes its place. With ``MEETINGTASKS_MIN_REPLICAS=N`` the
writes that would lose a task if lost (a send's enqueue, a task's final status and
result) are followed by ``WAIT N`` on the same connection, in the same round trip, and
count only once N replicas have them. Without a confirmation within
``MEETINGTASKS_REPLICA_WAIT`` seconds the write raises NotReplicated: it is on the
primary, perhaps not beyond. A failover inside that wait is ridden out: a replica that
joins the new primary (the old one restarted as a replica) confirms it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from meetingtasks.base.settings import Settings
from meetingtasks.errors import NotReplicated

#: Scripts whose writes must reach the replicas (store/lua/<name>.lua).
REPLICATED_SCRIPTS = frozenset({"enqueue", "finish"})
#: Milliseconds one WAIT blocks; a write waits in such slices until its deadline.
WAIT_SLICE_MS = 500


@dataclass(frozen=True)
class Policy:
    """Replicas a replicated write must reach (0: none, as plain Redis), and how long it
    waits for them (``MEETINGTASKS_MIN_REPLICAS``, ``MEETINGTASKS_REPLICA_WAIT``)."""

    replicas: int
    wait: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.min_replicas, settings.replica_wait)

    def confirm(self, connection: Any, acknowledged: int) -> None:
        """Wait on ``connection`` (the one that wrote) until ``replicas`` acknowledged
        its writes, ``acknowledged`` being the first WAIT's answer; NotReplicated past
        the deadline."""
        deadline = time.monotonic() + self.wait
        while acknowledged < self.replicas and time.monotonic() < deadline:
            connection.send_command(*wait_command(self.replicas))
            acknowledged = int(connection.read_response())
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"Redis took the write but only {acknowledged} of the {self.replicas} "
                f"replicas MEETINGTASKS_MIN_REPLICAS asks for confirmed it within "
                f"{self.wait:g}s: a failover now could lose it. It may still be applied: "
                "retrying may run the task twice"
            )


def on_a_replica(error: Exception) -> bool:
    """Whether Redis refused a write (or a WAIT) because it is a replica now: a sentinel
    named it as primary a moment before the failover reached it."""
    text = str(error)
    return "READONLY" in text or "replica instances" in text


def wait_command(replicas: int) -> tuple[Any, ...]:
    return ("WAIT", replicas, WAIT_SLICE_MS)
