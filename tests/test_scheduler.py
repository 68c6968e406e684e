"""TaskScheduler: delays live in Redis, run once when due, whatever the worker does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.scheduler import TaskScheduler
from meetingtasks.store import delayed, script
from tests.support.waiting import queued_ids, wait_until
from tests.support.workers import REPO
from tests.worker_tasks import flaky, read_journal, record

TEST_ROUTES = str(REPO / "tests" / "routes")
SHORT_VISIBILITY = {
    "MEETINGTASKS_VISIBILITY_TIMEOUT": "2",
    "MEETINGTASKS_TIMEOUT_GRACE": "0.5",
    "MEETINGTASKS_ROUTES_DIR": TEST_ROUTES,
}


def test_a_delayed_task_waits_in_redis_not_in_a_queue(app, redis) -> None:
    scheduler = TaskScheduler()
    task_id = scheduler.submit("system.echo", {"value": 1}, countdown=3600, priority="high")

    assert scheduler.pending() == 1
    assert delayed.due_time(get_keys(), task_id) == pytest.approx(time.time() + 3600, abs=60)
    assert queued_ids(redis, "default") == []


def test_a_due_task_is_queued_at_its_priority_with_no_eta_left(app, redis) -> None:
    result = record.apply_async(("later",), queue="media", priority=Priority.HIGH, countdown=0.2)
    scheduler = TaskScheduler()
    assert scheduler.move_due() == 0
    time.sleep(0.3)

    assert scheduler.move_due() == 1
    raw = redis.lrange(get_keys().queue("media", Priority.HIGH), 0, -1)
    assert [json.loads(m)["headers"]["id"] for m in raw] == [result.id]
    assert json.loads(raw[0])["headers"]["eta"] is None
    assert scheduler.pending() == 0


def test_a_task_delayed_anew_after_it_was_read_waits_for_its_new_time(app, redis) -> None:
    """The move re-checks each task as read: a retry delayed again meanwhile (another
    entry, a later due time) is not queued on the stale read."""
    keys = get_keys()
    result = record.apply_async(("later",), queue="media", countdown=0.2)
    time.sleep(0.3)
    stale = redis.hget(keys.delayed_messages(), result.id)
    list_key, _, status_key, doorbell = json.loads(stale)
    redis.zadd(keys.delayed(), {result.id: time.time() + 3600})  # delayed anew

    move = script("move_due")
    moved = move(keys=[keys.delayed(), keys.delayed_messages(), list_key, status_key, doorbell],
                 args=[time.time(), 100, 1, result.id, stale])  # fmt: skip

    assert moved == 0
    assert queued_ids(redis, "media") == []
    assert TaskScheduler().pending() == 1


def test_an_id_without_an_entry_is_dropped_and_a_bad_entry_blocks_no_other(app, redis) -> None:
    keys = get_keys()
    good = record.apply_async(("later",), queue="media", countdown=0.2)
    redis.zadd(keys.delayed(), {"orphan": 1, "garbled": 2})
    redis.hset(keys.delayed_messages(), "garbled", "not json")
    time.sleep(0.3)

    assert TaskScheduler().move_due() == 1

    assert queued_ids(redis, "media") == [good.id]
    assert redis.zrange(keys.delayed(), 0, -1) == ["garbled"]


def test_delay_past_the_visibility_timeout_runs_once_across_a_worker_restart(
    app, redis, start_worker
) -> None:
    """Workers only: the delay outlives the visibility timeout, the worker that was
    running when it was sent, and a second worker joins late; it runs once."""
    # Plain Celery would hand this ETA task to a worker at once, which would hold it in
    # memory and, with a 2 s visibility timeout, see it redelivered every 2 s.
    worker = start_worker(["media"], env=SHORT_VISIBILITY)
    sent = time.time()
    record.apply_async(("delayed", "once"), queue="media", countdown=6)
    time.sleep(2)
    worker.kill()  # during the delay
    start_worker(["media"], env=SHORT_VISIBILITY)
    time.sleep(2)
    start_worker(["media"], env=SHORT_VISIBILITY)  # joins late, still before it is due

    runs = wait_until(lambda: read_journal("once"), "the delayed task to run")
    time.sleep(4)  # two more visibility timeouts: a redelivery would show now
    runs = read_journal("once")
    assert len(runs) == 1
    assert runs[0]["at"] >= sent + 6


def test_long_retry_backoff_waits_in_the_delay_store(app, redis, start_worker) -> None:
    start_worker(["user"], env={"MEETINGTASKS_RETRY_BACKOFF_BASE": "600"})
    result = flaky.delay("backoff", fail_times=1)

    wait_until(lambda: TaskScheduler().pending() == 1, "the retry to be delayed")
    assert delayed.due_time(get_keys(), result.id) > time.time() + 250
    assert app.control.inspect(timeout=2).scheduled() in (None, {}) or not any(
        app.control.inspect(timeout=2).scheduled().values()
    ), "a worker holds the retry in memory"


def test_pending_delays_cost_redis_memory_not_worker_memory(app, redis, start_worker) -> None:
    worker = start_worker(["default"], concurrency=1)
    assert app.send_task("system.echo", kwargs={"value": "warm"}).get(timeout=30) == "warm"
    before = worker.rss_bytes()
    redis_before = redis.info("memory")["used_memory"]

    with app.producer_or_acquire() as producer:
        for i in range(100_000):
            app.send_task("system.echo", kwargs={"value": i}, countdown=7200, producer=producer)

    assert TaskScheduler().pending() == 100_000
    assert app.send_task("system.echo", kwargs={"value": "after"}).get(timeout=30) == "after"
    after = worker.rss_bytes()
    redis_growth = redis.info("memory")["used_memory"] - redis_before
    print(
        f"\n100,000 delayed tasks pending: worker RSS {before / 2**20:.1f} MiB -> "
        f"{after / 2**20:.1f} MiB; Redis memory +{redis_growth / 2**20:.1f} MiB"
    )
    assert after - before < 10 * 2**20
    assert redis_growth > 20 * 2**20  # the 100,000 messages are in Redis


def test_two_scheduler_processes_queue_each_due_task_exactly_once(
    app, redis, tmp_path: Path
) -> None:
    with app.producer_or_acquire() as producer:
        sent = [
            app.send_task("system.noop", countdown=0.5, producer=producer).id for _ in range(10_000)
        ]
    assert TaskScheduler().pending() == 10_000
    logs = [tmp_path / f"scheduler{i}.log" for i in range(2)]
    schedulers = []
    for log in logs:
        with open(log, "wb") as out:
            schedulers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "meetingtasks", "scheduler"],
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        wait_until(lambda: TaskScheduler().pending() == 0, "the schedulers to move everything")
    finally:
        for process in schedulers:
            process.terminate()
            process.wait(30)
    queued = queued_ids(redis, "default")
    assert len(queued) == 10_000
    assert sorted(queued) == sorted(sent)
    moved = int(redis.hget(get_keys().scheduler_stats(), "moved"))
    assert moved == 10_000


def test_three_workers_run_each_due_task_exactly_once(app, redis, start_worker) -> None:
    """Every worker runs the scheduler loops: three at once still queue each due task once."""
    for _ in range(3):
        start_worker(["media"], env={"MEETINGTASKS_SCHEDULER_INTERVAL": "0.05"})
    sent = {
        record.apply_async((f"d{i}", "spread"), queue="media", countdown=1).id for i in range(300)
    }
    wait_until(lambda: len(read_journal("spread")) >= len(sent), "every delayed task to run", 120)
    time.sleep(1)  # a task moved twice would run a second time now
    runs = [entry["id"] for entry in read_journal("spread")]
    assert sorted(runs) == sorted(sent)
    assert int(redis.hget(get_keys().scheduler_stats(), "moved")) == len(sent)


def test_with_the_embedded_loops_off_only_a_scheduler_process_fires_delays(
    app, redis, start_worker, tmp_path: Path
) -> None:
    start_worker(["media"], env={"MEETINGTASKS_EMBEDDED_SCHEDULER": "0"})
    result = record.apply_async(("later", "apart"), queue="media", countdown=0.5)
    time.sleep(2)
    assert TaskScheduler().pending() == 1 and read_journal("apart") == []

    with open(tmp_path / "scheduler.log", "wb") as out:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "meetingtasks", "scheduler"], cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert result.get(timeout=60) == "later"
    finally:
        scheduler.terminate()
        scheduler.wait(30)
