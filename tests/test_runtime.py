"""Runtime: components start in order, stop in reverse, and stop gracefully."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from meetingtasks.events import Event
from meetingtasks.runtime import Runtime, RuntimeConfig
from tests.support.events_helpers import FAST, WAIT, Recorder
from tests.support.waiting import wait_until


@pytest.fixture
def managers(redis):
    """Makes Runtimes with fast event loops; every one is stopped at the end."""
    made: list[Runtime] = []

    def new(**options: Any) -> Runtime:
        manager = Runtime(replace(RuntimeConfig(event_bus=FAST), **options))
        made.append(manager)
        return manager

    yield new
    for manager in made:
        manager.stop()


class Probe:
    """A component that notes, when started or stopped, whether the built-in ones run."""

    def __init__(self, name: str, manager: Runtime, journal: list[tuple[Any, ...]]) -> None:
        self.name, self.manager, self.journal = name, manager, journal

    def _note(self, what: str) -> None:
        scheduler = self.manager.scheduler
        self.journal.append(
            (
                what,
                self.name,
                self.manager.local_bus.stats()["running"],
                self.manager.event_bus.stats()["running"],
                scheduler is not None and scheduler.running,
            )
        )

    def start(self) -> None:
        self._note("start")

    def stop(self) -> None:
        self._note("stop")

    def stats(self) -> dict[str, Any]:
        return {"probe": self.name}


def test_added_components_start_after_the_built_in_ones_and_stop_before_them(managers) -> None:
    manager = managers(scheduler=True)
    journal: list[tuple[Any, ...]] = []
    manager.add("first", Probe("first", manager, journal))
    manager.add("second", Probe("second", manager, journal))

    manager.start()
    assert journal == [("start", "first", True, True, True), ("start", "second", True, True, True)]
    stats = manager.stats()
    assert list(stats["components"]) == ["local_bus", "event_bus", "scheduler", "first", "second"]
    assert stats["components"]["second"] == {"probe": "second"}
    assert set(stats["components"]["scheduler"]["loops"]) == {
        "due-tasks", "priority-aging", "recovery", "timeouts",
    }  # fmt: skip

    manager.stop()
    assert journal[2:] == [
        ("stop", "second", True, True, True),
        ("stop", "first", True, True, True),
    ]
    assert not manager.local_bus.stats()["running"]
    assert not manager.event_bus.stats()["running"]
    assert manager.scheduler is not None and not manager.scheduler.running
    with pytest.raises(RuntimeError, match="create a new one"):
        manager.start()


def test_stop_drains_every_event_the_local_bus_accepted(managers) -> None:
    manager = managers()
    gate = threading.Event()
    handled: list[int] = []
    manager.local_bus.on("work.*", lambda event: (gate.wait(WAIT), handled.append(1)))
    manager.start()
    for n in range(50):
        assert manager.local_bus.emit("work.item", {"n": n}, "tests")

    stopper = threading.Thread(target=manager.stop)
    stopper.start()
    wait_until(lambda: not manager.local_bus.stats()["running"], what="stop to begin")
    gate.set()
    stopper.join(WAIT)

    assert not stopper.is_alive()
    assert len(handled) == 50
    stats = manager.local_bus.stats()
    assert (stats["total"], stats["processed"], stats["dropped"]) == (50, 50, 0)


def test_event_bus_stops_before_the_local_bus_it_feeds(managers) -> None:
    """An event the event bus is still handling when stop begins reaches the local bus,
    which is stopped only after it and still processes it."""
    manager = managers()
    local = Recorder("local")
    manager.local_bus.on("*", local)
    entered, gate = threading.Event(), threading.Event()

    def forward_late(event: Event) -> None:
        entered.set()
        gate.wait(WAIT)
        manager.local_bus.publish(event)

    manager.event_bus.subscribe("meeting.m1", forward_late)
    manager.start()
    manager.event_bus.publish("meeting.m1", Event("meeting.user_joined", {}, "tests"))
    assert entered.wait(WAIT)

    stopper = threading.Thread(target=manager.stop)
    stopper.start()
    wait_until(lambda: not manager.event_bus.stats()["running"], what="the event bus to stop")
    gate.set()
    stopper.join(WAIT)

    assert [event.type for event in local.events] == ["meeting.user_joined"]
    assert manager.local_bus.stats()["dropped"] == 0


class Broken:
    def start(self) -> None:
        raise OSError("cannot bind")

    def stop(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def test_a_component_that_fails_to_start_stops_the_others(managers) -> None:
    manager = managers()
    journal: list[tuple[Any, ...]] = []
    manager.add("probe", Probe("probe", manager, journal))
    manager.add("broken", Broken())

    with pytest.raises(OSError, match="cannot bind"):
        manager.start()
    assert [entry[:2] for entry in journal] == [("start", "probe"), ("stop", "probe")]
    assert not manager.local_bus.stats()["running"]
    assert not manager.event_bus.stats()["running"]


def test_components_are_added_before_start_under_unique_names(managers) -> None:
    manager = managers()
    with pytest.raises(ValueError, match="already registered"):
        manager.add("local_bus", Broken())
    manager.start()
    with pytest.raises(RuntimeError, match="before start"):
        manager.add("late", Broken())
