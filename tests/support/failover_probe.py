"""A service that subscribed and sent before a failover: what reaches it after one.

    python -m tests.support.failover_probe MEETING_ID DELAY

Run with MEETINGTASKS_REDIS_URL set to a sentinel:// URL. Before the failover it
subscribes to the meeting's channel on the event bus and sends ``system.echo`` with a
delay of DELAY seconds and a callback (``TaskDispatcher.dispatch_async``), prints
``ready`` and waits for a line on stdin (the test fails over meanwhile). Then it adds a
participant to the meeting every second until its subscription has seen the event (a
Pub/Sub event published while the subscriber reconnects is gone, as Pub/Sub goes),
waits for the delayed task's callback, and prints one JSON line: what arrived.
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any


def main(meeting_id: str, delay: float) -> None:
    from meetingtasks.dispatch import TaskDispatcher, TaskRequest
    from meetingtasks.events.bus import EventBus
    from meetingtasks.events.channels import meeting_channel

    events: queue.Queue[Any] = queue.Queue()
    results: queue.Queue[Any] = queue.Queue()
    bus = EventBus()
    bus.subscribe(meeting_channel(meeting_id), events.put)
    bus.start()
    dispatcher = TaskDispatcher()
    delayed = TaskRequest(type="system.echo", payload={"value": "delayed"}, delay=delay)
    dispatcher.dispatch_async(delayed, results.put)
    print("ready", flush=True)
    sys.stdin.readline()

    event = None
    for number in range(60):
        join = {"meeting_id": meeting_id, "user_id": f"user{number}"}
        dispatcher.dispatch(TaskRequest(type="meeting.add_participant", payload=join))
        try:
            event = events.get(timeout=1)
            break
        except queue.Empty:
            continue
    result = results.get(timeout=60)
    report = {
        "event": None if event is None else {"type": event.type, "user_id": event.user_id},
        "delayed": {"status": result.status.value, "result": result.result},
    }
    print(json.dumps(report), flush=True)
    dispatcher.stop()
    bus.stop()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
