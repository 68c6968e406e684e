"""Monitoring events as Celery sends them, one at a time and grouped; batches of sends."""

from __future__ import annotations

import json
import time
from datetime import datetime

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from tests.support.messages import published

#: Differ between any two sends: ids, clocks and times.
PER_SEND = {"id", "root_id", "correlation_id", "delivery_tag", "mt_tag", "mt_enqueued_at"}


def _without_per_send(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_per_send(v) for k, v in value.items() if k not in PER_SEND}
    return value


def test_a_delayed_dispatch_waits_in_the_delay_store_like_a_delayed_send(app, redis) -> None:
    request = TaskRequest(type="system.echo", payload={}, delay=60)
    responses = []
    [event] = published(redis, lambda: responses.append(TaskDispatcher().dispatch(request)))
    [response] = responses
    assert response.status == "scheduled"
    # The task-sent event shows when it will run, as Celery's does for a countdown.
    eta = datetime.fromisoformat(event["body"]["eta"]).timestamp()
    assert round(eta - event["body"]["timestamp"]) == 60
    assert redis.zscore(get_keys().delayed(), response.task_id) is not None
    assert redis.llen(get_keys().queue("default", Priority.NORMAL)) == 0


def _without_clocks(event: dict) -> dict:
    """An event envelope without what differs between two sends of one event."""

    def fields(body: dict) -> dict:
        return {k: v for k, v in body.items() if k not in ("clock", "timestamp", "local_received")}

    body = event["body"]
    return {
        **_without_per_send(event),
        "body": [fields(e) for e in body] if isinstance(body, list) else fields(body),
    }


def test_worker_events_are_published_as_celerys_dispatcher_publishes_them(app, redis) -> None:
    """Our EventDispatcher (in every process of the app, workers included) sends what
    Celery's own sends through kombu, one event at a time and as a buffered group."""
    from celery.events.dispatcher import EventDispatcher as CeleryEventDispatcher

    from meetingtasks.celery_ext.event_dispatcher import EventDispatcher

    assert isinstance(app.events.Dispatcher(enabled=False), EventDispatcher)
    fields = {"uuid": "t-1", "name": "system.echo", "args": "()", "kwargs": "{}", "retries": 0}
    seen = {}
    for kind, dispatcher_cls in (("ours", EventDispatcher), ("celery", CeleryEventDispatcher)):
        with app.connection_for_write() as connection:
            one = dispatcher_cls(connection, hostname="w1@host", app=app)
            grouped = dispatcher_cls(connection, hostname="w1@host", app=app, buffer_group=["task"])
            [single] = published(
                redis, lambda d=one: d.send("task-received", **fields), "task.received"
            )

            def send_group(d=grouped) -> None:
                d.send("task-started", **fields)
                d.send("task-succeeded", result="'hi'", runtime=0.01, **fields)
                d.flush()

            [group] = published(redis, send_group, "task.multi")
            seen[kind] = (single, group)

    (our_single, our_group), (celery_single, celery_group) = seen["ours"], seen["celery"]
    assert _without_clocks(our_single) == _without_clocks(celery_single)
    assert _without_clocks(our_group) == _without_clocks(celery_group)
    assert our_single["body"]["type"] == "task-received"
    assert [e["type"] for e in our_group["body"]] == ["task-started", "task-succeeded"]
    assert our_group["body"][1]["result"] == "'hi'"


def test_a_batch_is_queued_in_order_with_one_sent_event_per_group(app, redis) -> None:
    """A batch bigger than one enqueue call and one event group: every task queued in the
    order given (delayed ones in the delay store), with its status, and its task-sent
    event inside ``task.multi`` events, which Celery's receivers (Flower's) unpack."""
    from meetingtasks.celery_ext.envelopes import SENT_EVENTS_GROUPED
    from meetingtasks.store.queueing import DOORBELL_TOKENS, ENQUEUE_CHUNK

    n = max(ENQUEUE_CHUNK, SENT_EVENTS_GROUPED) + 44
    requests = [TaskRequest(type="system.noop", request_id=f"r{i}") for i in range(n)]
    requests[7] = TaskRequest(type="system.noop", request_id="later", delay=60)
    responses = []
    groups = published(
        redis, lambda: responses.extend(TaskDispatcher().dispatch_batch(requests)), "task.multi"
    )

    keys = get_keys()
    now = [r.task_id for r in responses if r.request_id != "later"]
    [later] = [r.task_id for r in responses if r.request_id == "later"]
    queued = [json.loads(raw)["headers"]["id"]
              for raw in redis.lrange(keys.queue("default", Priority.NORMAL), 0, -1)]  # fmt: skip
    assert queued[::-1] == now  # consumers pop from the right: first sent, first taken
    assert redis.zscore(keys.delayed(), later) is not None
    assert redis.hget(keys.status(later), "status") == "scheduled"
    assert {redis.hget(keys.status(task_id), "status") for task_id in now} == {"queued"}
    assert redis.llen(keys.doorbell("default")) == min(len(now), DOORBELL_TOKENS)

    assert len(groups) == -(-n // SENT_EVENTS_GROUPED)
    events = [event for group in groups for event in group["body"]]
    assert [event["uuid"] for event in events] == [r.task_id for r in responses]
    assert {event["type"] for event in events} == {"task-sent"}
    assert events[7]["eta"] is not None and events[0]["eta"] is None


def test_celerys_event_receiver_sees_every_task_sent_in_a_batch(app, redis) -> None:
    """What Flower runs: Celery's EventReceiver unpacks the batch's grouped events."""
    import threading

    from meetingtasks.celery_ext.envelopes import SENT_EVENTS_GROUPED

    seen: list[str] = []
    n = SENT_EVENTS_GROUPED + 10
    patterns = redis.execute_command("PUBSUB", "NUMPAT")
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"task-sent": lambda event: seen.append(event["uuid"])}
        )
        thread = threading.Thread(
            target=lambda: receiver.capture(limit=2, timeout=30, wakeup=False), daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30  # until its subscription is live in Redis
        while redis.execute_command("PUBSUB", "NUMPAT") <= patterns:
            assert time.monotonic() < deadline, "the receiver never subscribed"
            time.sleep(0.01)
        requests = [TaskRequest(type="system.noop") for _ in range(n)]
        responses = TaskDispatcher().dispatch_batch(requests)
        thread.join(30)
    assert seen == [r.task_id for r in responses]


def test_an_event_with_a_new_routing_key_is_named_without_the_broker(app, redis) -> None:
    """A worker that loses the broker announces ``worker-offline``, a routing key it never
    used: naming its channel must not wait for the broker (kombu retries for seconds)."""
    from meetingtasks.celery_ext import envelopes

    keys = get_keys()
    with app.connection_for_write() as connection:
        expected = (
            keys.prefix
            + connection.default_channel._get_publish_topics("celeryev", "worker.offline")[0]
        )
    envelopes.event_channel(app, keys, "worker.heartbeat")  # the worker's first events

    def unreachable() -> None:
        raise AssertionError("named a channel through a broker connection")

    original = app.connection_for_write
    app.connection_for_write = unreachable
    try:
        assert envelopes.event_channel(app, keys, "worker.offline") == expected
    finally:
        app.connection_for_write = original
