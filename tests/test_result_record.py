"""One record per task: Celery's result is a few fields of the task's status hash.

Celery sees its usual results (AsyncResult, forget, groups), a task leaves one key,
results published while AsyncResult's listener was disconnected are caught up from
the record, and a result that a dispatcher or AsyncResult.get() awaited is kept only
until it is read."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery import group, states

from meetingtasks.base.keys import get_keys
from meetingtasks.base.record import TaskRecord
from meetingtasks.base.settings import get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.celery_ext.result_record import fields_of, meta_of
from meetingtasks.dispatch import TaskDispatcher, TaskRequest, TaskResult
from meetingtasks.errors import Permanent
from tests.support.waiting import wait_until
from tests.worker_tasks import add, flaky

RESULT_TIMEOUT = 60


@pytest.fixture
def worker(start_worker):
    return start_worker(["default", "user"])


def _pairs(fields: list[str]) -> dict[str, str]:
    return dict(zip(fields[::2], fields[1::2], strict=True))


def test_fields_hold_only_what_the_status_does_not_say(app) -> None:
    encode, decode = app.backend.encode, app.backend.decode
    success = {"status": states.SUCCESS, "result": {"a": 1}, "traceback": None, "children": []}
    assert _pairs(fields_of(success, "completed", encode)) == {"result": '{"a": 1}'}

    failure = {
        "status": states.FAILURE, "traceback": "Traceback ...", "parent_id": "p1",
        "result": {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"},
    }  # fmt: skip
    stored = _pairs(fields_of(failure, "failed", encode))
    assert set(stored) == {"result", "traceback", "meta"}  # FAILURE is what failed says
    record = {"status": "failed", "updated_at": "1796000000.5", **stored}
    meta = meta_of(TaskRecord("t1", record), decode)
    assert meta is not None
    assert (meta["status"], meta["traceback"], meta["parent_id"]) == (
        states.FAILURE, "Traceback ...", "p1",
    )  # fmt: skip
    assert meta["result"]["exc_type"] == "ValueError" and meta["task_id"] == "t1"
    assert meta["date_done"].startswith("2026-11-30T")

    started = {"status": states.STARTED, "result": {"pid": 1}}
    assert _pairs(fields_of(started, None, encode))["state"] == states.STARTED
    expired = {"status": states.REVOKED, "result": {"exc_type": "TaskRevokedError"}}
    assert "state" not in _pairs(fields_of(expired, "timeout", encode))  # timeout implies it
    assert meta_of(TaskRecord("t2", {"status": "completed"}), decode) is None  # result ignored


def test_a_task_leaves_one_key_and_celery_reads_its_result_there(app, redis, worker) -> None:
    keys = get_keys()
    kept = add.delay(2, 3)
    assert kept.get(timeout=RESULT_TIMEOUT) == 5
    assert app.AsyncResult(kept.id).get(timeout=RESULT_TIMEOUT) == 5  # a fresh handle reads
    assert redis.keys(f"*{kept.id}*") == [keys.status(kept.id)]
    assert app.AsyncResult(kept.id).date_done is not None
    assert 0 < redis.ttl(keys.status(kept.id)) <= get_settings().retention_unwatched  # read

    failing = flaky.delay("one-record", 0, True)
    with pytest.raises(Permanent, match="never work"):
        app.AsyncResult(failing.id).get(timeout=RESULT_TIMEOUT)
    assert "Permanent" in app.AsyncResult(failing.id).traceback
    assert app.AsyncResult(failing.id).state == states.FAILURE

    assert group(add.s(i, i) for i in range(3)).apply_async().get(timeout=RESULT_TIMEOUT) == [
        0, 2, 4,
    ]  # fmt: skip
    kept.forget()
    assert app.AsyncResult(kept.id).state == states.PENDING
    assert redis.hget(keys.status(kept.id), "status") == "completed"  # the status stays


def test_a_new_result_replaces_every_field_of_the_one_before(app, redis) -> None:
    task_id, record = str(uuid.uuid4()), get_keys().status
    app.backend.store_result(task_id, {"step": 1}, "PROGRESS", traceback="at step 1")
    assert {"state", "traceback"} <= set(redis.hkeys(record(task_id)))
    app.backend.mark_as_done(task_id, 5)
    assert {"state", "traceback"}.isdisjoint(redis.hkeys(record(task_id)))
    assert app.AsyncResult(task_id).get(timeout=5) == 5


def test_a_late_report_never_replaces_how_a_task_ended(app, redis, worker) -> None:
    done = add.delay(1, 1)
    assert done.get(timeout=RESULT_TIMEOUT) == 2
    app.backend.store_result(done.id, None, states.STARTED)  # a lost worker's late word
    app.backend.mark_as_failure(done.id, RuntimeError("late"))
    assert app.AsyncResult(done.id).get(timeout=RESULT_TIMEOUT) == 2
    assert redis.hget(get_keys().status(done.id), "status") == "completed"


def test_a_result_published_while_the_listener_was_down_is_caught_up(app, redis) -> None:
    task_id = str(uuid.uuid4())
    waiting = app.AsyncResult(task_id)
    app.backend.add_pending_result(waiting)  # AsyncResult.get() listens from here
    app.backend.mark_as_done(task_id, 42)  # published while nobody reads the socket
    app.backend.result_consumer._reconnect_pubsub()  # the connection was lost
    redis.delete(get_keys().status(task_id))  # so only what the catch-up delivered is left
    assert waiting.get(timeout=5) == 42
    app.backend.remove_pending_result(waiting)


def test_an_awaited_result_is_kept_until_it_is_read(app, redis, worker) -> None:
    keys, unwatched = get_keys(), get_settings().retention_unwatched
    dispatcher = TaskDispatcher()

    def echo(value: str, **options: Any) -> TaskRequest:
        return TaskRequest(type="system.echo", payload={"value": value}, **options)

    read = dispatcher.dispatch(echo("read"))
    chosen = dispatcher.dispatch(echo("chosen", retention=900))
    resumable = dispatcher.dispatch(echo("resumable", session_id="s-1"))
    for sent in (read, chosen, resumable):
        assert dispatcher.wait(str(sent.task_id), RESULT_TIMEOUT).status is TaskStatus.COMPLETED
    assert 0 < redis.ttl(keys.status(str(read.task_id))) <= unwatched
    assert redis.ttl(keys.status(str(chosen.task_id))) > unwatched  # the call chose
    assert redis.ttl(keys.status(str(resumable.task_id))) > unwatched  # a session may resume

    called: list[TaskResult] = []
    failing = TaskRequest(
        type="test.flaky", payload={"journal_name": "read", "fail_times": 0, "permanent": True}
    )
    try:
        dispatcher.dispatch_async(echo("called"), called.append)
        dispatcher.dispatch_async(failing, called.append)
        wait_until(lambda: len(called) == 2, "both callbacks")
    finally:
        dispatcher.stop()
    by_status = {result.status: result.task_id for result in called}
    assert 0 < redis.ttl(keys.status(by_status[TaskStatus.COMPLETED])) <= unwatched
    kept_failure = redis.ttl(keys.status(by_status[TaskStatus.FAILED]))
    assert kept_failure > get_settings().retention_result  # a failure stays for its letter
