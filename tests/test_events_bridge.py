"""bridge(): EventBus events forwarded into a service's LocalEventBus."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from redis import Redis

from meetingtasks.events import Event, EventType, LocalEventBus, bridge
from tests.support.events_helpers import Buses, Recorder, event
from tests.support.waiting import wait_until


@pytest.fixture
def buses(redis: Redis) -> Iterator[Buses]:
    made = Buses()
    yield made
    made.stop_all()


class ParticipantList:
    """What a meeting service keeps locally, updated from bridged events."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.lock = threading.Lock()

    def joined(self, event: Event) -> None:
        with self.lock:
            self.users.add(str(event.user_id))

    def left(self, event: Event) -> None:
        with self.lock:
            self.users.discard(str(event.user_id))


def test_meeting_service_tracks_participants_from_bridged_events(buses: Buses) -> None:
    participants = ParticipantList()
    local = LocalEventBus(buffer_size=100, workers=1)
    local.on(EventType.MEETING_USER_JOINED, participants.joined)
    local.on(EventType.MEETING_USER_LEFT, participants.left)
    seen_locally = Recorder()
    local.on("*", seen_locally)
    local.start()
    bus = buses.new()
    bridge(bus, local, "meeting.*", types=("meeting.user_*",))
    bus.start()

    publisher = buses.new()
    for kind, user in [("joined", "u1"), ("joined", "u2"), ("left", "u1")]:
        before = len(seen_locally.events)
        publisher.publish(
            "meeting.m1",
            Event(f"meeting.user_{kind}", {}, "signaling", meeting_id="m1", user_id=user),
        )
        # Handlers run concurrently, so order matters only within one handler call:
        # wait for each before the next, as a causal sequence of real joins would.
        seen_locally.wait_for(before + 1)
    publisher.publish("meeting.m1", event("meeting.ended", last=True))  # not bridged
    publisher.publish("meeting.m1", Event("meeting.user_joined", {}, "s", user_id="u3"))
    wait_until(lambda: len(seen_locally.events) == 4)
    local.stop()

    assert participants.users == {"u2", "u3"}
    assert "meeting.ended" not in {e.type for e in seen_locally.events}
    assert local.stats()["processed"] == 4


def test_bridge_from_a_durable_channel(buses: Buses) -> None:
    local = LocalEventBus()
    recorder = Recorder()
    local.on("ai.*", recorder)
    local.start()
    bus = buses.new()
    bridge(bus, local, "durable.ai", wait=True, group="meeting-service")
    bus.start()
    publisher = buses.new()
    for n in range(20):
        publisher.publish("durable.ai", event("ai.task_completed", n=n))

    assert recorder.numbers(20) == list(range(20))
    local.stop()
