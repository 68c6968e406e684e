"""Routing: routes/ data, each type in its service queue, unknown types refused."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.errors import ConfigurationError, InvalidPriority, UnknownTaskType
from meetingtasks.policies.routing import Route, RouteTable, get_route_table

SERVICE_QUEUES = {"ai", "media", "meeting", "signaling", "user", "default"}


def queued_task_names(redis, queue: str) -> list[str]:
    keys = get_keys()
    names = []
    for priority in Priority:
        for raw in redis.lrange(keys.queue(queue, priority), 0, -1):
            names.append(json.loads(raw)["headers"]["task"])
    return names


def sample_payload(app, task_type: str) -> dict[str, str]:
    """A payload that fits the task's signature (every required argument a string)."""
    task = app.tasks.get(task_type)
    if task is None:
        return {}
    parameters = inspect.signature(task.run).parameters.values()
    return {p.name: "x" for p in parameters if p.default is inspect.Parameter.empty}


def test_routes_declare_the_service_queues_and_the_spec_task_types() -> None:
    table = get_route_table()
    assert set(table.queues) == SERVICE_QUEUES
    for task_type in ("ai.llm_chat", "ai.summarize", "ai.speech_recognition",
                      "ai.emotion_detection"):  # fmt: skip
        assert table.get(task_type).queue == "ai"
    assert {r.queue for r in table} >= SERVICE_QUEUES


def test_every_routed_type_has_a_handler_and_every_handler_a_route(app) -> None:
    routed = {r.type for r in get_route_table() if not r.type.startswith("test.")}
    ours = {
        name for name, task in app.tasks.items()
        if task.__module__.startswith("meetingtasks.tasks.")
    }  # fmt: skip
    assert routed == ours


def test_every_type_lands_in_its_queue_at_its_priority(app, redis) -> None:
    routes = [r for r in get_route_table() if not r.type.startswith("test.")]
    for route in routes:
        app.send_task(route.type, kwargs=sample_payload(app, route.type))

    keys = get_keys()
    for route in routes:
        messages = [
            json.loads(m) for m in redis.lrange(keys.queue(route.queue, route.priority), 0, -1)
        ]
        assert route.type in [m["headers"]["task"] for m in messages], route
    for queue in SERVICE_QUEUES:
        expected = sorted(r.type for r in routes if r.queue == queue)
        assert sorted(queued_task_names(redis, queue)) == expected


def test_a_worker_never_sees_another_queues_tasks(app, redis, start_worker) -> None:
    worker = start_worker(["user"])
    other = app.send_task("meeting.add_participant", kwargs={"meeting_id": "m1", "user_id": "u1"})
    mine = app.send_task("user.set_presence", kwargs={"user_id": "u1", "status": "online"})

    assert mine.get(timeout=60) == "online"
    worker.stop()
    assert queued_task_names(redis, "meeting") == ["meeting.add_participant"]
    assert other.id not in worker.log()
    assert other.state == "PENDING"


def test_unknown_type_is_refused_and_nothing_is_queued(app, redis) -> None:
    with pytest.raises(UnknownTaskType, match=r"unknown task type 'ai\.nonexistent'.*ai\.llm_chat"):
        app.send_task("ai.nonexistent", kwargs={})
    assert redis.dbsize() == 0


def test_priority_names_and_numbers_are_accepted_and_bad_ones_refused(app, redis) -> None:
    app.send_task("system.noop", priority="critical")
    assert redis.llen(get_keys().queue("default", Priority.CRITICAL)) == 1
    # Celery's 0-9: 5 lands with HIGH, where kombu's steps would put it.
    app.send_task("system.noop", priority=5)
    assert redis.llen(get_keys().queue("default", Priority.HIGH)) == 1
    for bad in ("urgent", 10, -1, 2.5):
        with pytest.raises(InvalidPriority, match=str(bad)):
            app.send_task("system.noop", priority=bad)
    assert redis.llen(get_keys().queue("default", Priority.NORMAL)) == 0
    assert redis.llen(get_keys().queue("default", Priority.LOW)) == 0


def test_explicit_priority_beats_the_route_default(app, redis) -> None:
    app.tasks["signaling.relay"].apply_async(
        kwargs={"from_user": "a", "to_user": "b", "kind": "offer", "body": {}},
        priority=Priority.LOW,
    )
    assert redis.llen(get_keys().queue("signaling", Priority.LOW)) == 1
    assert redis.llen(get_keys().queue("signaling", Priority.CRITICAL)) == 0


def test_a_services_own_unrouted_task_goes_to_the_default_queue(app, redis) -> None:
    @app.task(name="myservice.own_task")
    def own_task() -> None: ...

    own_task.apply_async(priority=Priority.HIGH)
    assert queued_task_names(redis, "default") == ["myservice.own_task"]
    assert redis.llen(get_keys().queue("default", Priority.HIGH)) == 1


def test_register_route_sends_a_new_type_to_its_queue(app, redis) -> None:
    table = get_route_table()
    table.register(Route(type="media.snapshot", queue="media", priority="low"))
    try:
        app.send_task("media.snapshot", kwargs={})
        assert redis.llen(get_keys().queue("media", Priority.LOW)) == 1
    finally:
        table._routes.pop("media.snapshot")


# -- the routes/ data itself ----------------------------------------------------------------


def write(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.toml").write_text(text)


def test_route_files_are_read_with_defaults(tmp_path: Path) -> None:
    write(tmp_path, "default", "")
    write(tmp_path, "ai", '[defaults]\ntimeout = 90\n[tasks."ai.x"]\npriority = "high"\n')
    table = RouteTable.load(tmp_path)
    assert table.get("ai.x") == Route(type="ai.x", queue="ai", priority=Priority.HIGH, timeout=90)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ai": ""}, "'default' queue must be declared"),
        ({"default": "", "Bad-Queue": ""}, "bad queue name 'Bad-Queue'"),
        ({"default": "", "unacked": ""}, "bad queue name 'unacked'"),
        ({"default": '[tasks."x.y"]\npriority = "urgent"\n'}, "bad route 'x.y'"),
        ({"default": '[tasks."x.y"]\ntimeout = -1\n'}, "bad route 'x.y'"),
        ({"default": '[tasks."x.y"]\ncolour = "red"\n'}, "bad route 'x.y'"),
        ({"default": '[tasks."NoDot"]\n'}, "bad route 'NoDot'"),
        ({"default": "[task]\n"}, "unknown table"),
        ({"default": "not toml ["}, "cannot read routes file"),
        ({"default": '[tasks."x.y"]\n', "ai": '[tasks."x.y"]\n'}, "routed twice"),
    ],
)
def test_bad_route_files_are_refused_with_the_reason(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ConfigurationError, match=message):
        RouteTable.load(tmp_path)


def test_an_empty_routes_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no routes found"):
        RouteTable.load(tmp_path)


def test_a_route_to_an_undeclared_queue_is_refused() -> None:
    table = RouteTable(["default"])
    with pytest.raises(ConfigurationError, match="not declared"):
        table.register(Route(type="x.y", queue="nowhere"))
