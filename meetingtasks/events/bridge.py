"""Forwarding chosen EventBus events into a LocalEventBus.

A service subscribes once to a Redis channel and lets its own components react through
the in-process bus: e.g. the meeting service's participant list listens locally for
``meeting.user_joined`` while the bridge brings those events in from other services.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from meetingtasks.errors import WaitTimeout
from meetingtasks.events.bus import EventBus
from meetingtasks.events.delivery import Subscription
from meetingtasks.events.envelope import Event
from meetingtasks.events.local import LocalEventBus


def bridge(
    bus: EventBus,
    local: LocalEventBus,
    channel: str,
    types: Iterable[str] = ("*",),
    *,
    wait: bool = False,
    timeout: float | None = None,
    group: str | None = None,
    consumer: str | None = None,
) -> Subscription:
    """Forward the events of ``channel`` (a name or pattern) whose type matches one of
    ``types`` (globs) into ``local``; ``bus.unsubscribe`` of the result ends it.

    By default a full local buffer drops the event (counted by the local bus). With
    ``wait=True`` the bridge waits for room instead; if it still finds none the forward
    fails, so on a durable channel the entry stays unacknowledged and comes back later.
    """
    patterns = tuple(types)

    def forward(event: Event) -> None:
        if not any(fnmatchcase(event.type, pattern) for pattern in patterns):
            return
        if not local.publish(event, wait=wait, timeout=timeout) and wait:
            raise WaitTimeout(f"local event bus full or stopped; {event.type} not forwarded")

    forward.__qualname__ = f"bridge({channel}->local)"
    return bus.subscribe(channel, forward, group=group, consumer=consumer)
