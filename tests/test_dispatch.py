"""TaskDispatcher: status every process sees, waits, callbacks for every end, batches."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.status import TaskStatus
from meetingtasks.dispatch import REJECTED, TaskDispatcher, TaskRequest, TaskResult
from meetingtasks.errors import (
    InvalidOption,
    InvalidPayload,
    InvalidPriority,
    UnknownTaskType,
)
from meetingtasks.policies.routing import SHARED_CHECK, get_route_table
from tests.support.cli import meetingtasks_cli
from tests.support.waiting import queued_ids, wait_until
from tests.worker_tasks import read_journal, record


@pytest.fixture
def dispatcher():
    dispatcher = TaskDispatcher(poll_interval=0.5)
    yield dispatcher
    dispatcher.stop()


def test_status_is_visible_to_every_process_through_the_lifecycle(
    app, redis, start_worker, dispatcher
) -> None:
    response = dispatcher.dispatch(
        TaskRequest(type="system.echo", payload={"value": 42}, priority="high", user_id="u1",
                    meeting_id="m1", session_id="s1", request_id="r1")
    )  # fmt: skip
    elsewhere = TaskDispatcher()  # another dispatcher, as in another process
    queued = elsewhere.status(response.task_id)
    assert response.status == "queued"
    assert queued is not None and queued.status is TaskStatus.QUEUED
    assert (queued.type, queued.priority, queued.queue) == ("system.echo", Priority.HIGH, "default")
    assert (queued.user_id, queued.meeting_id, queued.session_id, queued.request_id) == (
        "u1", "m1", "s1", "r1",
    )  # fmt: skip

    start_worker(["default"])
    done = elsewhere.wait(response.task_id, timeout=60)
    assert (done.status, done.result, done.attempts) == (TaskStatus.COMPLETED, 42, 1)
    assert done.started_at is not None and done.updated_at >= done.started_at


def test_retrying_shows_in_status_and_attempts(app, redis, start_worker, dispatcher):
    start_worker(["user"], env={"MEETINGTASKS_RETRY_BACKOFF_BASE": "0.5"})
    response = dispatcher.dispatch(
        TaskRequest(type="test.flaky", payload={"journal_name": "d", "fail_times": 1})
    )
    wait_until(
        lambda: dispatcher.status(response.task_id).status is TaskStatus.RETRYING,
        "the retrying status",
    )
    done = dispatcher.wait(response.task_id, timeout=60)
    assert (done.status, done.attempts, done.result) == (TaskStatus.COMPLETED, 2, 1)
    assert dispatcher.stats()["retried"] == 1


def test_a_callback_fires_once_for_every_end_state(app, redis, start_worker, dispatcher) -> None:
    start_worker(["default", "user"])
    ended: list[TaskResult] = []
    lock = threading.Lock()

    def callback(result: TaskResult) -> None:
        with lock:
            ended.append(result)

    sent = {
        "completed": dispatcher.dispatch_async(
            TaskRequest(type="system.echo", payload={"value": "ok"}), callback
        ),
        "failed": dispatcher.dispatch_async(
            TaskRequest(
                type="test.flaky",
                payload={"journal_name": "cb", "fail_times": 5, "permanent": True},
            ),
            callback,
        ),
        "timeout": dispatcher.dispatch_async(
            TaskRequest(type="test.sleep", payload={"seconds": 30}, timeout=1), callback
        ),
        "cancelled": dispatcher.dispatch_async(
            TaskRequest(type="system.echo", payload={"value": "never"}, delay=30), callback
        ),
    }
    assert dispatcher.cancel(sent["cancelled"].task_id) is True

    wait_until(lambda: len(ended) >= 4, "four callbacks", timeout=90)
    time.sleep(1.5)  # three poll rounds: a second call for any task would show now
    by_id = {r.task_id: r for r in ended}
    assert Counter(r.task_id for r in ended) == Counter({r.task_id: 1 for r in sent.values()})
    for expected, response in sent.items():
        assert by_id[response.task_id].status.value == expected
    assert by_id[sent["completed"].task_id].result == "ok"
    assert "SoftTimeLimitExceeded" in by_id[sent["timeout"].task_id].error
    assert "Permanent" in by_id[sent["failed"].task_id].error


def test_a_task_whose_worker_died_times_out_and_its_callback_fires(
    app, redis, start_worker, dispatcher
) -> None:
    """The timeout monitor of another worker (of another queue) ends the lost run."""
    start_worker(["default"])
    worker = start_worker(["user"], env={"MEETINGTASKS_HEARTBEAT_TTL": "3"})
    ended: list[TaskResult] = []
    response = dispatcher.dispatch_async(
        TaskRequest(type="test.sleep", payload={"seconds": 60, "journal_name": "lost"}, timeout=2),
        ended.append,
    )
    wait_until(lambda: read_journal("lost"), "the task to start")
    worker.kill()  # no worker of its queue left to run it or report anything

    wait_until(lambda: ended, "the timeout callback", timeout=90)
    assert [(r.task_id, r.status) for r in ended] == [(response.task_id, TaskStatus.TIMEOUT)]
    assert "worker was lost" in ended[0].error
    start_worker(["user"])  # the recovered message is dropped, not run late
    time.sleep(2)
    assert [e["event"] for e in read_journal("lost")] == ["started"]


def test_callbacks_survive_a_redis_restart_without_the_poll(
    app, redis, redis_server, start_worker
) -> None:
    """The end is announced while the listener is away or after it resubscribed: either
    way the callback fires, from Pub/Sub or from the catch-up after the reconnect."""
    dispatcher = TaskDispatcher(poll_interval=3600)  # the safety-net poll never runs
    try:
        start_worker(["user"])
        ended: list[TaskResult] = []
        response = dispatcher.dispatch_async(
            TaskRequest(type="test.sleep", payload={"seconds": 1, "journal_name": "restart"}),
            ended.append,
        )
        wait_until(lambda: read_journal("restart"), "the task to start")
        redis_server.restart()  # kill -9, then start on the same AOF

        wait_until(lambda: ended, "the callback")
        assert [(r.task_id, r.status) for r in ended] == [(response.task_id, TaskStatus.COMPLETED)]
    finally:
        dispatcher.stop()


def test_batch_queues_the_valid_and_reports_the_invalid(app, redis, dispatcher) -> None:
    requests: list[TaskRequest | dict] = [
        TaskRequest(type="system.noop", request_id=f"r{i}") for i in range(10_000)
    ]
    bad = {
        17: {"type": "system.nonexistent", "request_id": "bad-type"},
        404: {"type": "system.echo", "payload": {"value": object()}, "request_id": "bad-json"},
        5000: {"type": "system.noop", "priority": "urgent", "request_id": "bad-priority"},
        9999: {"type": "system.echo", "payload": {"nope": 1}, "request_id": "bad-args"},
    }
    for index, request in bad.items():
        requests[index] = request

    responses = dispatcher.dispatch_batch(requests)

    rejected = {r.request_id: r.error for r in responses if r.status == REJECTED}
    assert set(rejected) == {"bad-type", "bad-json", "bad-priority", "bad-args"}
    assert "unknown task type" in rejected["bad-type"]
    assert "not JSON-serialisable" in rejected["bad-json"]
    assert "bad priority" in rejected["bad-priority"]
    assert "does not fit" in rejected["bad-args"]
    accepted = [r.task_id for r in responses if r.status == "queued"]
    assert len(accepted) == 10_000 - len(bad)
    assert sorted(queued_ids(redis, "default")) == sorted(accepted)
    assert dispatcher.stats()["dispatched"] == len(accepted)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"type": "nope.nothing"}, UnknownTaskType),
        ({"type": "system.echo", "payload": {"value": {1, 2}}}, InvalidPayload),
        ({"type": "system.echo", "payload": {"value": "x" * 2_000_000}}, InvalidPayload),
        ({"type": "system.echo", "payload": "text"}, InvalidPayload),
        ({"type": "system.echo", "timeout": -1}, InvalidOption),
        ({"type": "system.echo", "priority": "asap"}, InvalidPriority),
        ({"type": "system.echo", "max_retries": -2}, InvalidOption),
        ({"type": "system.echo", "unexpected": 1}, InvalidOption),
        ({"type": "maintenance.cleanup_meeting", "payload": {}}, InvalidPayload),
    ],
)
def test_bad_input_raises_and_queues_nothing(app, redis, dispatcher, fields, error) -> None:
    with pytest.raises(error):
        dispatcher.dispatch(TaskRequest(**fields))
    assert redis.dbsize() == 0


def test_stats_are_cluster_wide_by_type_and_priority(app, redis, start_worker, dispatcher):
    start_worker(["default", "user"])
    ok = [
        dispatcher.dispatch(TaskRequest(type="system.echo", payload={"value": i}, priority="low"))
        for i in range(3)
    ]
    bad = dispatcher.dispatch(
        TaskRequest(type="test.flaky", payload={"journal_name": "s", "fail_times": 1,
                                                "permanent": True})
    )  # fmt: skip
    for response in [*ok, bad]:
        dispatcher.wait(response.task_id, timeout=60)

    stats = TaskDispatcher().stats()  # a fresh one: nothing is per process
    assert (stats["dispatched"], stats["completed"], stats["failed"], stats["active"]) == (
        4,
        3,
        1,
        0,
    )
    assert stats["by_type"]["system.echo"] == {"dispatched": 3, "completed": 3}
    assert stats["by_type"]["test.flaky"] == {"dispatched": 1, "failed": 1}
    assert stats["by_priority"]["low"]["completed"] == 3


def test_register_route_and_idempotency(app, redis, dispatcher) -> None:
    route = dispatcher.register_route("test.record", queue="media", priority="high", timeout=5)
    try:
        first = dispatcher.dispatch(
            TaskRequest(type="test.record", payload={"label": "x"}, idempotency_key="k1")
        )
        again = dispatcher.dispatch(
            TaskRequest(type="test.record", payload={"label": "y"}, idempotency_key="k1")
        )
        assert again.task_id == first.task_id
        assert queued_ids(redis, "media") == [first.task_id]
        assert redis.llen(get_keys().queue("media", Priority.HIGH)) == 1
        assert route.timeout == 5
    finally:
        get_route_table()._routes.pop("test.record")
    # Celery would keep the first send's options (priority HIGH) for the task for good.
    record.apply_async(("unrouted", "routes"), queue="user")
    assert redis.llen(get_keys().queue("user", Priority.NORMAL)) == 1
    with pytest.raises(InvalidOption):
        dispatcher.register_route("bad type", queue="media")


def test_a_route_registered_at_run_time_reaches_every_process(
    app, redis, start_worker, dispatcher
) -> None:
    """A worker started before the registration follows it, and a process that never
    registered it (the command line) dispatches the type and waits for our status."""
    start_worker(["user"], env={"MEETINGTASKS_RETRY_BACKOFF_BASE": "0.05"})
    table = get_route_table()
    before = table.get("test.flaky")  # routes it with 4 retries (tests/worker_tasks.py)
    try:
        dispatcher.register_route("test.flaky", queue="user", max_retries=1)
        time.sleep(SHARED_CHECK + 0.5)  # every process looks for new routes once a second
        ended = dispatcher.wait(
            dispatcher.dispatch(
                TaskRequest(type="test.flaky", payload={"journal_name": "shared", "fail_times": 5})
            ).task_id,
            timeout=60,
        )
        assert ended.status is TaskStatus.FAILED
        assert len(read_journal("shared")) == 2  # the worker's own table said 5 attempts

        payload = '{"journal_name": "cli", "fail_times": 0}'
        done = meetingtasks_cli("dispatch", "test.flaky", "--data", payload, "--wait")
        assert done.returncode == 0, done.stderr
        assert '"status": "completed"' in done.stdout and '"result": 0' in done.stdout
        failing = meetingtasks_cli(
            "dispatch",
            "test.flaky",
            "--data",
            '{"journal_name": "cli", "fail_times": 1, "permanent": true}',
            "--wait",
        )
        assert failing.returncode == 1 and '"status": "failed"' in failing.stdout
    finally:
        table.register(before)
