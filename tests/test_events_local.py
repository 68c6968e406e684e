"""LocalEventBus: the in-process signal bus (no Redis involved)."""

from __future__ import annotations

import threading

import pytest

from meetingtasks.errors import InvalidEvent
from meetingtasks.events import Event, LocalEventBus
from tests.support.events_helpers import WAIT, Recorder
from tests.support.waiting import wait_until


def test_emit_never_blocks_and_drops_are_counted_exactly() -> None:
    gate = threading.Event()
    slow = Recorder(fail=lambda e: not gate.wait(WAIT))
    bus = LocalEventBus(buffer_size=5, workers=2)
    bus.on("meeting.*", slow)
    bus.start()
    results: list[bool] = []
    emitter = threading.Thread(
        target=lambda: results.extend(bus.emit("meeting.created", {"n": n}) for n in range(100))
    )
    emitter.start()
    emitter.join(WAIT)
    # Every handler is stuck, yet all 100 emits returned.
    assert not emitter.is_alive()
    assert not gate.is_set()
    stats = bus.stats()
    assert stats["total"] == 100
    assert stats["dropped"] == results.count(False) > 0
    # What was accepted waits in the buffer or in a stuck handler (workers may still be
    # taking their first event from the buffer at this point).
    assert stats["queue_depth"] <= 5
    assert stats["queue_depth"] + stats["in_progress"] == stats["total"] - stats["dropped"]

    gate.set()
    bus.stop()
    stats = bus.stats()
    assert stats["processed"] == results.count(True) == len(slow.events)
    assert stats["dropped"] == stats["total"] - stats["processed"]
    assert stats["failed"] == 0


def test_stop_processes_everything_accepted() -> None:
    recorder = Recorder()
    bus = LocalEventBus(buffer_size=1000, workers=3)
    bus.on("*", recorder)
    bus.start()
    for n in range(500):
        assert bus.emit("ai.task_created", {"n": n})
    bus.stop()

    assert recorder.numbers() == list(range(500))
    stats = bus.stats()
    assert (stats["processed"], stats["queue_depth"], stats["running"]) == (500, 0, False)
    assert bus.emit("ai.task_created") is False  # refused after stop, and counted
    assert bus.stats()["dropped"] == 1


def test_events_emitted_before_start_are_not_lost() -> None:
    recorder = Recorder()
    bus = LocalEventBus(buffer_size=10, workers=1)
    bus.on("meeting.created", recorder)
    assert bus.emit("meeting.created", {"n": 1})
    bus.stop()  # never started: stop still delivers what it accepted
    assert [e.payload["n"] for e in recorder.events] == [1]


def test_wildcards_and_several_handlers_per_type() -> None:
    exact, exact_too, meetings, media, everything = (Recorder() for _ in range(5))
    bus = LocalEventBus()
    bus.on("meeting.user_joined", exact)
    bus.on("meeting.user_joined", exact_too)
    bus.on("meeting.*", meetings)
    bus.on("media.*", media)
    bus.on("*", everything)
    with bus:
        bus.emit("meeting.user_joined", {"user_id": "u1"}, "meeting-service", meeting_id="m1")
        bus.emit("media.stream_started", {}, "media-service")
        bus.emit("ai.task_failed", {}, "ai-service")

    def types(recorder: Recorder) -> list[str]:
        return sorted(e.type for e in recorder.events)

    assert types(exact) == types(exact_too) == ["meeting.user_joined"]
    assert types(meetings) == ["meeting.user_joined"]
    assert types(media) == ["media.stream_started"]
    assert types(everything) == ["ai.task_failed", "media.stream_started", "meeting.user_joined"]
    assert exact.events[0].meeting_id == "m1"
    assert exact.events[0].source == "meeting-service"


def test_handler_failures_are_caught_and_counted() -> None:
    good = Recorder()
    bus = LocalEventBus(workers=2)
    bus.on("meeting.ended", Recorder(fail=lambda e: True))
    bus.on("meeting.ended", good)
    with bus:
        for n in range(10):
            bus.emit("meeting.ended", {"n": n})
    assert len(good.events) == 10
    stats = bus.stats()
    assert (stats["processed"], stats["failed"], stats["dropped"]) == (10, 10, 0)


def test_caller_can_choose_to_wait_for_room() -> None:
    gate = threading.Event()
    taken = threading.Event()
    bus = LocalEventBus(buffer_size=1, workers=1)

    def hold(event: Event) -> None:
        taken.set()
        gate.wait(WAIT)

    bus.on("*", hold)
    bus.start()
    assert bus.emit("meeting.created", {"n": 1})
    assert taken.wait(WAIT)  # the only worker holds event 1; the buffer is empty
    assert bus.emit("meeting.created", {"n": 2})  # fills the buffer
    assert bus.emit("meeting.created", {"n": 3}) is False
    assert bus.emit("meeting.created", {"n": 4}, wait=True, timeout=0.05) is False
    accepted: list[bool] = []
    waiter = threading.Thread(
        target=lambda: accepted.append(bus.emit("meeting.created", {"n": 5}, wait=True))
    )
    waiter.start()
    wait_until(lambda: bus.stats()["total"] == 5, what="the waiting emit to start")
    assert waiter.is_alive()  # held until a worker makes room
    gate.set()
    waiter.join(WAIT)
    assert accepted == [True]
    bus.stop()
    assert bus.stats()["processed"] == 3
    assert bus.stats()["dropped"] == 2


def test_bad_types_and_patterns_are_refused() -> None:
    bus = LocalEventBus()
    with pytest.raises(InvalidEvent):
        bus.emit("meeting.*")
    with pytest.raises(InvalidEvent):
        bus.emit("meeting.created", {"when": object()})
    with pytest.raises(InvalidEvent, match="pattern"):
        bus.on("meeting created", Recorder())
    with pytest.raises(InvalidEvent, match="callable"):
        bus.on("meeting.created", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_size"):
        LocalEventBus(buffer_size=0)
    bus.stop()
