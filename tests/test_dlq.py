"""Dead-letter queue: what failed for good lands there, and can run again as it was."""

from __future__ import annotations

import json

import pytest
from celery import states
from celery.exceptions import TimeLimitExceeded

from meetingtasks.base import frames
from meetingtasks.base import headers as h
from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import get_settings
from meetingtasks.dead_letter_queue import DeadLetterQueue
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.errors import Permanent, Retryable
from tests.support.cli import meetingtasks_cli
from tests.support.waiting import wait_until
from tests.worker_tasks import flaky, read_journal, sleep, until_fixed


@pytest.fixture
def worker(start_worker):
    return start_worker(["user", "meeting"], env={"MEETINGTASKS_RETRY_BACKOFF_BASE": "0.05"})


def test_task_that_exhausts_its_retries_lands_with_its_error(app, redis, worker) -> None:
    result = flaky.delay("dead", fail_times=100)
    with pytest.raises(Retryable):
        result.get(timeout=60)

    letter = wait_until(lambda: DeadLetterQueue().get(result.id), "the dead letter")
    assert letter.type == "test.flaky"
    assert letter.kwargs == {"fail_times": 100} and letter.args == ["dead"]
    assert letter.attempts == 5  # the first run and 4 retries
    assert letter.error_type == "Retryable"
    assert "transient failure on attempt 5" in letter.error
    assert "raise Retryable" in letter.traceback
    assert letter.queue == "user"
    assert DeadLetterQueue().count() == 1


def test_non_retryable_failure_lands_at_once(app, redis, worker) -> None:
    result = until_fixed.apply_async(("fix-1",), queue="meeting", priority=Priority.HIGH)
    with pytest.raises(Permanent):
        result.get(timeout=60)
    letter = wait_until(lambda: DeadLetterQueue().get(result.id), "the dead letter")
    assert letter.attempts == 1
    assert letter.priority == Priority.HIGH


def test_hard_timeout_lands_too(app, redis, start_worker) -> None:
    start_worker(["user"])
    result = sleep.apply_async((30,), {"ignore_soft_limit": True}, queue="user", timeout=1)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=60)
    letter = wait_until(lambda: DeadLetterQueue().get(result.id), "the dead letter")
    assert letter.error_type == "TimeLimitExceeded"
    assert letter.soft_time_limit == 1
    assert letter.time_limit == 1 + get_settings().timeout_grace


def test_requeue_runs_it_again_with_its_priority_and_route_then_purge(app, redis, worker) -> None:
    first = until_fixed.apply_async(("fix-2", "round"), queue="meeting", priority=Priority.HIGH)
    second = until_fixed.apply_async(("fix-2", "round"), queue="meeting", priority=Priority.LOW)
    for result in (first, second):
        with pytest.raises(Permanent):
            result.get(timeout=60)
    wait_until(lambda: DeadLetterQueue().count() == 2, "both dead letters")

    redis.set("fix-2", "1")  # the bug is fixed
    assert DeadLetterQueue().requeue(ids=[first.id]) == [first.id]
    again = app.AsyncResult(first.id)  # a fresh handle: `first` keeps the failure it saw
    assert again.get(timeout=60) == "fixed"
    assert again.state == states.SUCCESS

    runs = read_journal("round")
    assert len(runs) == 3
    assert runs[-1] == {**runs[-1], "priority": int(Priority.HIGH), "queue": "meeting"}
    assert DeadLetterQueue().count() == 1
    assert DeadLetterQueue().purge() == 1
    assert DeadLetterQueue().count() == 0


def test_cli_lists_requeues_and_purges(app, redis, worker) -> None:
    failed = [until_fixed.apply_async((f"fix-cli-{i}", "cli"), queue="meeting") for i in range(3)]
    for result in failed:
        with pytest.raises(Permanent):
            result.get(timeout=60)
    wait_until(lambda: DeadLetterQueue().count() == 3, "three dead letters")

    listed = meetingtasks_cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(e["task_id"] for e in json.loads(listed.stdout)) == sorted(r.id for r in failed)
    table = meetingtasks_cli("dlq", "list")
    assert "test.until_fixed" in table.stdout and "Permanent" in table.stdout

    redis.set("fix-cli-0", "1")
    requeued = meetingtasks_cli("dlq", "requeue", "-n", "1")
    assert requeued.returncode == 0, requeued.stderr
    assert failed[0].id in requeued.stdout
    assert app.AsyncResult(failed[0].id).get(timeout=60) == "fixed"

    assert meetingtasks_cli("dlq", "count").stdout.strip() == "2"
    no_ids = meetingtasks_cli("dlq", "requeue")
    assert no_ids.returncode != 0  # says what to give instead of guessing
    purged = meetingtasks_cli("dlq", "purge", "--yes")
    assert "purged 2" in purged.stdout
    assert DeadLetterQueue().count() == 0


def _next_frame(pubsub) -> dict:
    message = wait_until(lambda: pubsub.get_message(timeout=0.5), "a frame on the session")
    return json.loads(message["data"])


def test_a_requeued_client_task_still_reaches_its_session(app, redis, worker) -> None:
    """The dead letter keeps the task's client links, so its requeue ends in the session."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(get_keys().session_channel("s-42"))
    payload = {"flag": "fix-session", "journal_name": "session"}
    request = TaskRequest(type="test.until_fixed", payload=payload, session_id="s-42",
                          request_id="r-7", user_id="u-1", meeting_id="m-1")  # fmt: skip
    task_id = TaskDispatcher().dispatch(request).task_id
    assert _next_frame(pubsub) == _started(task_id)
    assert _next_frame(pubsub) == {**_next_frame_fields(task_id), "status": "failed",
                                   "error": "Permanent: fix-session is not set"}  # fmt: skip
    letter = wait_until(lambda: DeadLetterQueue().get(task_id), "the dead letter")
    assert letter.links == {h.SESSION: "s-42", h.REQUEST: "r-7", h.USER: "u-1", h.MEETING: "m-1"}

    redis.set("fix-session", "1")
    DeadLetterQueue().requeue(ids=[task_id])
    assert _next_frame(pubsub) == _started(task_id)
    frame = _next_frame(pubsub)
    assert frame == {**_next_frame_fields(task_id), "status": "completed", "result": "fixed"}
    record = TaskDispatcher().status(task_id)
    assert (record.session_id, record.user_id, record.meeting_id) == ("s-42", "u-1", "m-1")
    pubsub.close()


def _next_frame_fields(task_id: str) -> dict:
    return {"op": "result", "task_id": task_id, "request_id": "r-7"}


def _started(task_id: str) -> dict:
    """The frame a worker publishes when it takes the task: fetch.lua builds it in Lua,
    and it must be the one ``frames.task_processing`` names."""
    return json.loads(frames.task_processing(task_id, "r-7"))
