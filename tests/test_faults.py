"""Nothing accepted is lost when workers are killed with -9 or Redis restarts."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from meetingtasks.base.keys import get_keys
from tests.support.held import holders
from tests.support.waiting import wait_until
from tests.worker_tasks import read_journal, record

FAST_RECOVERY = {"MEETINGTASKS_HEARTBEAT_TTL": "3"}


def executions(journal_name: str) -> Counter[str]:
    return Counter(entry["id"] for entry in read_journal(journal_name))


def wait_for_progress(journal_name: str, done: int, timeout: float = 180.0) -> None:
    wait_until(lambda: len(executions(journal_name)) >= done, f"{done} tasks done", timeout)


def held_by_worker(redis, worker_name: str) -> set[str]:
    """Delivery tags held by any consumer of the worker named ``worker_name``."""
    return {tag for consumer, tags in holders(redis).items()
            if consumer.startswith(f"{worker_name}:") for tag in tags}  # fmt: skip


def held_tags(redis) -> set[str]:
    return {tag for tags in holders(redis).values() for tag in tags}


@pytest.mark.parametrize("watched", [True, False], ids=["tracked", "nobody watches"])
def test_kill_9_of_a_worker_three_times_loses_nothing(
    app, redis, start_worker, watched: bool
) -> None:
    """Only workers run (no scheduler process): the survivor gives back what each killed
    worker held, within the heartbeat TTL plus a sweep (the bound waited for here is
    generous: it checks that recovery happens, not how fast). Tasks nobody watches (no
    record) are released a flush after they end: the duplicates printed are that window."""
    total = 600
    options = {} if watched else {"ignore_result": True}
    sent = {record.apply_async((f"t{i}", "kills", 0.02), queue="media", **options).id
            for i in range(total)}  # fmt: skip
    start_worker(["media"], concurrency=2, env=FAST_RECOVERY)  # the survivor
    victim = start_worker(["media"], concurrency=2, env=FAST_RECOVERY)
    given_back = 0
    for share in (0.25, 0.5, 0.75):
        wait_for_progress("kills", int(total * share))
        victim.kill()  # kill -9 of the whole process group: main process and pool
        held = held_by_worker(redis, victim.name)  # before its heartbeat can lapse
        wait_until(
            lambda held=held: not held & held_tags(redis),
            "another worker to give back what the killed one held",
            timeout=float(FAST_RECOVERY["MEETINGTASKS_HEARTBEAT_TTL"]) + 30,
        )
        given_back += len(held)
        victim = start_worker(["media"], concurrency=2, env=FAST_RECOVERY)

    wait_for_progress("kills", total)
    runs = executions("kills")
    duplicates = sum(runs.values()) - len(runs)
    recovered = int(redis.hget(get_keys().scheduler_stats(), "recovered") or 0)
    print(
        f"\n{total} tasks ({'tracked' if watched else 'nobody watches'}), 3 kill -9 of a -c 2 "
        f"worker, workers only: {len(runs)} completed, {duplicates} ran twice, {recovered} "
        "messages given back by the other workers"
    )
    assert set(runs) == sent
    assert recovered >= given_back > 0
    wait_until(lambda: not held_tags(redis), "every message acknowledged")


def test_redis_restart_mid_run_loses_no_accepted_task(
    app, redis, redis_server, start_worker
) -> None:
    total = 500
    sent = {record.apply_async((f"t{i}", "restart", 0.01), queue="media").id for i in range(total)}
    worker = start_worker(["media"], concurrency=2)
    wait_for_progress("restart", total // 5)

    redis_server.restart()  # kill -9, then start on the same AOF (fsync always)
    restarted_at = time.time()

    wait_for_progress("restart", total)
    runs = executions("restart")
    after = sum(1 for e in read_journal("restart") if e["at"] > restarted_at)
    duplicates = sum(runs.values()) - len(runs)
    print(f"\n{total} tasks, Redis killed and restarted: {after} ran after it, {duplicates} twice")
    assert set(runs) == sent
    assert after > 0
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
