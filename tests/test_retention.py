"""Retention: a finished task's record stays as long as someone may want it, no longer.

The choice itself on its own, then real workers with short windows: a task nobody
awaits leaves nothing after its window; a client's task outlives that window for a
session that comes back; a dead letter stays until purged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.dead_letter_queue import DeadLetterQueue
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.errors import InvalidOption, Permanent
from meetingtasks.policies.retention import policy
from meetingtasks.policies.routing import Route, get_route_table
from tests.support.gateways import Client, GatewayProcess, token
from tests.support.waiting import wait_until
from tests.worker_tasks import add, flaky, kept_here

UNWATCHED = 2  # seconds, in the workers of these tests


def test_the_window_follows_who_may_still_want_the_record() -> None:
    settings = get_settings()
    retention = policy()  # this process's, from its settings
    done = TaskStatus.COMPLETED
    assert retention.seconds(done) == settings.retention_unwatched
    assert retention.seconds(done, session=True) == settings.gateway_idle_timeout
    assert retention.seconds(done, awaited=True) == settings.retention_result
    assert retention.seconds(done, result_kept=True) == settings.retention_result
    assert retention.seconds(TaskStatus.FAILED, session=True) == settings.retention_failed
    assert retention.seconds(TaskStatus.TIMEOUT) == settings.retention_failed
    assert retention.seconds(TaskStatus.RETRYING) == settings.status_ttl  # not over yet
    assert settings.retention_unwatched < settings.retention_result
    assert retention.seconds(TaskStatus.FAILED, override=5) == 5  # a route's or a call's
    assert retention.seconds(done, override="0.4") == 1  # whole seconds, as a record holds it


def test_a_route_and_a_call_choose_it_at_send(app, redis) -> None:
    keys = get_keys()
    for task_type in ("test.kept", "test.kept_here"):
        get_route_table().register(Route(type=task_type, queue="default", retention=7))
    by_name = app.send_task("test.kept")  # a type this process does not implement
    by_task = kept_here.delay()  # one it does (its options come from the task)
    dispatched = TaskDispatcher().dispatch(TaskRequest(type="test.kept"))
    chosen = TaskDispatcher().dispatch(TaskRequest(type="test.kept", retention=9))
    called = kept_here.apply_async(retention=11)
    records = [by_name.id, by_task.id, dispatched.task_id, chosen.task_id, called.id]
    kept = [float(redis.hget(keys.status(str(i)), "retention")) for i in records]
    assert kept == [7, 7, 7, 9, 11]


def test_a_bad_retention_is_refused_before_anything_is_queued(app, redis) -> None:
    with pytest.raises(InvalidOption, match="retention must be a positive number"):
        add.apply_async((1, 2), retention=0)
    with pytest.raises(InvalidOption, match="retention"):
        add.apply_async((1, 2), retention="a day")
    with pytest.raises(ValueError, match="retention"):
        TaskRequest(type="system.noop", retention=-1)
    assert not redis.keys(f"{get_keys().status_prefix()}*")


def test_a_task_nobody_awaits_leaves_nothing_after_its_window(app, redis, start_worker) -> None:
    """A task with a time limit nobody awaits keeps its record the unwatched window; one
    nobody watches at all (ignore_result, no limit) never has a record, and is counted."""
    keys = get_keys()
    start_worker(["default", "user"], env={"MEETINGTASKS_RETENTION_UNWATCHED": str(UNWATCHED)})
    unwatched = add.apply_async((1, 2), ignore_result=True, timeout=30)
    untracked = add.apply_async((1, 1), ignore_result=True)
    kept = add.apply_async((2, 2), retention=600)  # the call's own window

    def over(task_id: str) -> bool:
        return redis.hget(keys.status(task_id), "status") == "completed"

    wait_until(lambda: over(unwatched.id) and over(kept.id), "completed tasks")
    assert 0 < redis.ttl(keys.status(unwatched.id)) <= UNWATCHED
    assert "result" not in redis.hgetall(keys.status(unwatched.id))  # ignored: none kept
    wait_until(lambda: TaskDispatcher().stats()["by_type"]["test.add"].get("completed") == 3,
               "the untracked task counted")  # fmt: skip
    assert not redis.exists(keys.status(untracked.id))
    wait_until(lambda: not redis.exists(keys.status(unwatched.id)), "expired record")
    assert redis.ttl(keys.status(kept.id)) > UNWATCHED
    assert kept.get(timeout=10) == 4 and redis.ttl(keys.status(kept.id)) > UNWATCHED


def test_a_client_task_waits_for_its_session_to_come_back(
    app, redis, start_worker, tmp_path: Path
) -> None:
    keys = get_keys()
    start_worker(["default"], env={"MEETINGTASKS_RETENTION_UNWATCHED": str(UNWATCHED)})
    gateway = GatewayProcess(tmp_path / "gateway.log")
    try:
        client = Client(gateway.ws_url(token("alice")))
        frame = {"op": "submit", "request_id": "r", "type": "echo", "data": {"value": "hi"}}
        task_id = client.request(frame)["task_id"]
        assert client.result("r")["result"] == "hi"
        session = client.session_id
        client.close()
        left = time.monotonic()
        wait_until(lambda: time.monotonic() - left > UNWATCHED + 1, "unwatched window to pass")

        back = Client(gateway.ws_url(token("alice"), session=session))
        answer = back.request({"op": "status", "task_id": task_id, "request_id": "s"})
        assert (answer["status"], answer.get("result")) == ("completed", "hi")
        window = get_settings().gateway_idle_timeout
        assert UNWATCHED < redis.ttl(keys.status(task_id)) <= window
        back.close()
    finally:
        gateway.stop()


def test_a_dead_letter_stays_until_purged(app, redis, start_worker) -> None:
    keys = get_keys()
    start_worker(["user"], env={"MEETINGTASKS_RETENTION_UNWATCHED": str(UNWATCHED)})
    result = flaky.apply_async(("kept", 0, True), ignore_result=True)
    letter = wait_until(lambda: DeadLetterQueue().get(result.id), "dead letter")
    assert letter.error_type == Permanent.__name__
    left = time.monotonic()
    wait_until(lambda: time.monotonic() - left > UNWATCHED + 1, "unwatched window to pass")
    assert DeadLetterQueue().get(result.id) is not None
    assert redis.ttl(keys.status(result.id)) > UNWATCHED  # a failure's record is kept too
    assert DeadLetterQueue().purge() == 1
    assert DeadLetterQueue().get(result.id) is None
