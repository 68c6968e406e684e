"""The process-wide publish-only EventBus, for code that only sends events.

Service tasks announce what they did (a user joined, a stream started) without starting
a bus: publishing needs no reader, thread or subscription, only the bus's writer
connection. One bus per process, made on first use, and made again in a child after a
fork (a prefork worker's pool processes must not share the parent's Redis sockets).
"""

from __future__ import annotations

import os
import threading

from meetingtasks.events.bus import EventBus

_lock = threading.Lock()
_bus: tuple[int, EventBus] | None = None


def publisher() -> EventBus:
    """This process's publishing bus (channels and modes from the settings)."""
    global _bus
    with _lock:
        if _bus is None or _bus[0] != os.getpid():
            # A bus inherited through fork is dropped, not stopped: its sockets belong
            # to the parent, which still uses them.
            _bus = (os.getpid(), EventBus())
        return _bus[1]
