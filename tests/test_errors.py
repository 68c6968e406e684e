"""Every error meetingtasks raises derives from one root, MeetingTasksError."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from meetingtasks.errors import MeetingTasksError, StateError, WaitTimeout

PACKAGE = Path(__file__).resolve().parents[1] / "meetingtasks"


def exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class meetingtasks defines that derives from an exception."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                found.append((module.removesuffix(".__init__"), node.name))
    return [
        (module, name) for module, name in found
        if isinstance(cls := getattr(importlib.import_module(module), name, None), type)
        and issubclass(cls, BaseException)
    ]  # fmt: skip


def test_every_exception_class_is_under_the_root() -> None:
    classes = exception_classes()
    assert ("meetingtasks.errors", "ProtocolError") in classes
    outside = [
        f"{module}.{name}" for module, name in classes
        if not issubclass(getattr(importlib.import_module(module), name), MeetingTasksError)
    ]  # fmt: skip
    assert not outside, f"errors outside MeetingTasksError: {outside}"


def test_a_wait_that_runs_out_is_ours_and_a_timeout(app, redis) -> None:
    from meetingtasks.dispatch import TaskDispatcher, TaskRequest

    dispatcher = TaskDispatcher()
    response = dispatcher.dispatch(TaskRequest(type="system.noop"))  # no worker runs it
    with pytest.raises(WaitTimeout, match="has not ended") as raised:
        dispatcher.wait(response.task_id, timeout=0.2)
    assert isinstance(raised.value, TimeoutError)


def test_a_stopped_component_says_so_in_our_error() -> None:
    from meetingtasks.events import LocalEventBus

    bus = LocalEventBus(buffer_size=4, workers=1)
    bus.start()
    bus.stop()
    with pytest.raises(StateError, match="create a new one"):
        bus.start()
