"""Priority aging: queued tasks that waited long move up a level, so LOW never starves.

Strict priority lets constant CRITICAL load hold LOW work back forever. Every
``period`` seconds a task has waited earns it one level (LOW -> NORMAL -> HIGH ->
CRITICAL); it joins the back of its new level, so it never overtakes work already
waiting there. Kombu has no such notion, hence this small sweep over the queue lists
(``store/lua/promote_aged.lua``), one of the scheduler loops every worker runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meetingtasks.base.keys import Keys, get_keys
from meetingtasks.base.priority import PRIORITY_STEPS, Priority
from meetingtasks.policies.routing import get_route_table
from meetingtasks.store import script


class PriorityAging:
    def __init__(
        self,
        period: float,
        queues: tuple[str, ...] | None = None,
        keys: Keys | None = None,
        batch: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.period = period
        self.queues = queues if queues is not None else get_route_table().queues
        self.keys = keys or get_keys()
        self.batch = batch
        self.clock = clock
        self.promoted = 0

    def sweep(self) -> int:
        """Promote what is due in every queue; returns how many tasks moved."""
        if self.period <= 0:
            return 0
        moved = 0
        for queue in self.queues:
            moved += int(
                script("promote_aged")(
                    keys=[self.keys.queue(queue, p) for p in Priority],
                    args=[self.clock(), self.period, self.batch, *PRIORITY_STEPS],
                )
            )
        self.promoted += moved
        return moved
