"""Per-message timeouts (soft, then hard) and expiry of tasks that could not start in time."""

from __future__ import annotations

import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from meetingtasks.errors import InvalidOption
from tests.worker_tasks import read_journal, record, sleep, slow


def events(journal_name: str) -> list[str]:
    return [entry["event"] for entry in read_journal(journal_name)]


#: Prefork keeps time limits with signals and kills; threads (TimedThreadPool) by raising
#: in the task's thread.
POOLS = ["prefork", "threads"]


@pytest.mark.parametrize("pool", POOLS)
def test_soft_timeout_raises_inside_the_task(app, start_worker, pool: str) -> None:
    start_worker(["user"], pool=pool)
    result = sleep.apply_async((30,), {"journal_name": "soft"}, queue="user", timeout=1)

    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=60)
    assert events("soft") == ["started", "soft_limit"]


@pytest.mark.parametrize("pool", POOLS)
def test_hard_timeout_stops_a_task_that_ignores_the_soft_one(app, start_worker, pool) -> None:
    start_worker(["user"], pool=pool)
    stubborn = sleep.apply_async(
        (30,), {"journal_name": "hard", "ignore_soft_limit": True}, queue="user", timeout=1
    )

    with pytest.raises(TimeLimitExceeded):
        stubborn.get(timeout=60)
    assert events("hard") == ["started", "soft_limit"]
    # The worker (a new process, or the same thread back in the pool) goes on working.
    assert record.apply_async(("after",), queue="user").get(timeout=60) == "after"


def test_route_timeout_applies_without_per_message_option(app, start_worker) -> None:
    start_worker(["user"])
    result = slow.delay(30)  # routes: test.slow has timeout = 1

    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=60)
    assert events("slow") == ["started", "soft_limit"]


@pytest.mark.parametrize("timeout", [0, -1, "10", True])
def test_bad_timeout_is_refused_before_sending(app, redis, timeout: object) -> None:
    with pytest.raises(InvalidOption, match="timeout"):
        record.apply_async(("x",), queue="user", timeout=timeout)
    assert redis.dbsize() == 0


def test_task_that_could_not_start_in_time_expires_instead_of_running(app, start_worker) -> None:
    stale = record.apply_async(("stale", "expiry"), queue="user", expires=1)
    time.sleep(1.5)  # no worker yet: the task waits past its expiry
    start_worker(["user"])
    fresh = record.apply_async(("fresh", "expiry"), queue="user")

    assert fresh.get(timeout=60) == "fresh"
    assert stale.state == "REVOKED"
    assert [entry["label"] for entry in read_journal("expiry")] == ["fresh"]
