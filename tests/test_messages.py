"""The dispatcher's own message builder queues what Celery's ``send_task`` queues."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.keys import get_keys
from meetingtasks.priority import Priority

#: Differ between any two sends: ids, clocks and times.
PER_SEND = {"id", "root_id", "correlation_id", "delivery_tag", "mt_tag", "mt_enqueued_at"}


def _without_per_send(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_per_send(v) for k, v in value.items() if k not in PER_SEND}
    return value


def _queued(redis, queue: str, priority: Priority) -> dict:
    message = json.loads(redis.rpop(get_keys().queue(queue, priority)))
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _sent_events(redis, send) -> list[dict]:
    """The task-sent events published while ``send()`` runs."""
    pubsub = redis.pubsub()
    pubsub.psubscribe(f"{get_keys().prefix}*celeryev/task.sent")
    pubsub.get_message(timeout=5)  # the subscription itself
    send()
    events = []
    while (message := pubsub.get_message(timeout=2)) is not None:
        if message["type"] == "pmessage":
            event = json.loads(message["data"])
            event["body"] = json.loads(base64.b64decode(event["body"]))
            events.append(event)
    pubsub.close()
    return events


def test_dispatch_queues_the_message_send_task_queues(app, redis) -> None:
    request = TaskRequest(
        type="ai.llm_chat", payload={"prompt": "hello"}, priority="CRITICAL", timeout=30,
        max_retries=2, session_id="s1", request_id="r1", user_id="u1", meeting_id="m1",
    )  # fmt: skip
    dispatcher = TaskDispatcher()
    events = _sent_events(redis, lambda: dispatcher.dispatch(request))
    ours = _queued(redis, "ai", Priority.CRITICAL)
    app.send_task(
        "ai.llm_chat", kwargs={"prompt": "hello"}, priority="CRITICAL", timeout=30,
        max_retries=2, headers=dispatcher._headers(request, notify=False),
    )  # fmt: skip
    celerys = _queued(redis, "ai", Priority.CRITICAL)

    assert _without_per_send(ours["headers"]).keys() == _without_per_send(celerys["headers"]).keys()
    # Expiry: the route's 300 s after each was sent.
    for message in (ours, celerys):
        expires = datetime.fromisoformat(message["headers"].pop("expires")).timestamp()
        assert round(expires - message["headers"]["mt_enqueued_at"]) == 300
    assert _without_per_send(ours) == _without_per_send(celerys)
    assert ours["headers"]["timelimit"] == [30 + 5.0, 30]

    [event] = events
    assert event["properties"]["delivery_info"] == {
        "exchange": "celeryev",
        "routing_key": "task.sent",
    }
    assert event["body"]["type"] == "task-sent"
    assert event["body"]["uuid"] == ours["headers"]["id"]
    assert event["body"]["queue"] == "ai"
    assert event["body"]["kwargs"] == "{'prompt': 'hello'}"


def test_route_defaults_fill_what_the_request_leaves_out(app, redis) -> None:
    TaskDispatcher().dispatch(TaskRequest(type="ai.summarize", payload={"text": "t"}))
    app.send_task("ai.summarize", kwargs={"text": "t"})
    route_priority = Priority.NORMAL
    ours, celerys = _queued(redis, "ai", route_priority), _queued(redis, "ai", route_priority)
    assert ours["headers"]["timelimit"] == celerys["headers"]["timelimit"]
    assert ours["properties"]["priority"] == celerys["properties"]["priority"]
    assert ours["body"] == celerys["body"]


def test_a_delayed_dispatch_waits_in_the_delay_store_like_a_delayed_send(app, redis) -> None:
    request = TaskRequest(type="system.echo", payload={}, delay=60)
    responses = []
    [event] = _sent_events(redis, lambda: responses.append(TaskDispatcher().dispatch(request)))
    [response] = responses
    assert response.status == "scheduled"
    # The task-sent event shows when it will run, as Celery's does for a countdown.
    eta = datetime.fromisoformat(event["body"]["eta"]).timestamp()
    assert round(eta - event["body"]["timestamp"]) == 60
    assert redis.zscore(get_keys().delayed(), response.task_id) is not None
    assert redis.llen(get_keys().queue("default", Priority.NORMAL)) == 0
