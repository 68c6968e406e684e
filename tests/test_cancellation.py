"""Cancellation of delayed, queued and running tasks, held in Redis across restarts."""

from __future__ import annotations

import time

from celery import states

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.scheduler import TaskScheduler
from tests.support.held import held_now
from tests.support.waiting import wait_until
from tests.worker_tasks import cooperative, read_journal, record, sleep


def events(journal_name: str) -> list[str]:
    return [entry.get("event", entry.get("label")) for entry in read_journal(journal_name)]


def test_cancel_a_delayed_task(app, redis, start_worker) -> None:
    start_worker(["media"])
    doomed = record.apply_async(("doomed", "delayed"), queue="media", countdown=1)
    kept = record.apply_async(("kept", "delayed"), queue="media", countdown=1)

    assert TaskScheduler().cancel(doomed.id) is True
    assert TaskScheduler().pending() == 1
    assert kept.get(timeout=60) == "kept"

    assert events("delayed") == ["kept"]
    assert doomed.state == states.REVOKED


def test_cancel_sent_while_no_worker_runs_holds_after_workers_start(
    app, redis, start_worker
) -> None:
    doomed = record.apply_async(("doomed", "queued"), queue="media")
    assert (
        TaskScheduler().cancel(doomed.id) is True
    )  # no worker anywhere: the revoke broadcast reaches nobody

    worker = start_worker(["media"])
    after = record.apply_async(("after", "queued"), queue="media", priority=Priority.LOW)
    assert after.get(timeout=60) == "after"

    assert events("queued") == ["after"]
    assert doomed.state == states.REVOKED
    assert redis.llen(get_keys().queue("media", Priority.NORMAL)) == 0  # taken and dropped
    worker.stop()
    assert held_now(redis) == {}


def test_cancel_holds_across_a_worker_restart(app, redis, start_worker) -> None:
    worker = start_worker(["media"])
    blocker = sleep.apply_async((3,), {"journal_name": "blocker"}, queue="media")
    wait_until(lambda: events("blocker"), "the worker to be busy")
    waiting = record.apply_async(("waiting", "restart"), queue="media")
    assert TaskScheduler().cancel(waiting.id) is True
    worker.kill()  # its in-memory revoke list dies with it

    start_worker(["media"])
    assert record.apply_async(("after", "restart"), queue="media", priority=9).get(timeout=60)
    assert "waiting" not in events("restart")
    assert waiting.state == states.REVOKED
    del blocker


def test_cancel_a_running_task_terminates_it(app, redis, start_worker) -> None:
    start_worker(["media"])
    running = sleep.apply_async((30,), {"journal_name": "running"}, queue="media")
    wait_until(lambda: events("running") == ["started"], "the task to start")

    assert TaskScheduler().cancel(running.id) is True
    wait_until(lambda: running.state == states.REVOKED, "the task to be revoked")
    assert events("running") == ["started"]
    # The worker goes on with other work.
    assert record.apply_async(("next", "running"), queue="media").get(timeout=60) == "next"


def test_a_running_task_can_notice_its_cancellation(app, redis, start_worker) -> None:
    start_worker(["media"], pool="threads")  # no termination in this pool: only the flag
    running = cooperative.apply_async(queue="media")
    wait_until(lambda: events("cooperative"), "the task to start")

    assert TaskScheduler().cancel(running.id) is True
    assert running.get(timeout=60) == "stopped early"
    assert events("cooperative") == ["started", "noticed"]


def test_cancel_of_a_finished_task_says_so(app, redis, start_worker) -> None:
    start_worker(["media"])
    done = record.apply_async(("done", "finished"), queue="media")
    done.get(timeout=60)
    assert TaskScheduler().cancel(done.id) is False
    assert done.state == states.SUCCESS
    time.sleep(0)
