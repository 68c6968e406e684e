"""Cluster stats (``Runtime.stats()``, ``meetingtasks stats``) against real Redis and
real workers: exactly the depths, delayed, processing, dead-letter and worker counts the
test made."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.status import TaskStatus
from meetingtasks.dead_letter_queue import DeadLetterQueue
from meetingtasks.dispatch import TaskDispatcher
from meetingtasks.runtime import Runtime, cluster_stats
from tests.support.backlog import DEAD, DELAYED, dead_letter, expected_queues, make_backlog
from tests.support.waiting import wait_until
from tests.support.workers import REPO
from tests.worker_tasks import read_journal, sleep


@pytest.fixture
def backlog(app) -> None:
    make_backlog()


def assert_backlog(stats: dict[str, Any]) -> None:
    assert stats["namespace"] == "mttest"
    assert stats["queues"] == expected_queues()
    assert (stats["delayed"], stats["processing"], stats["dlq"]) == (DELAYED, 0, DEAD)
    assert stats["workers"] == {"online": 0, "ids": []}
    assert "dispatcher" in stats


def test_stats_report_exactly_the_backlog(backlog) -> None:
    manager = Runtime()
    try:
        stats = manager.stats()
    finally:
        manager.stop()
    assert_backlog(stats)
    assert set(stats["components"]) == {"local_bus", "event_bus"}
    json.dumps(stats)  # JSON-able as it is


def stats_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meetingtasks", "stats", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_cli_json_reports_exactly_the_backlog(backlog) -> None:
    done = stats_cli("--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert_backlog(stats)


def test_cli_table_shows_the_depths_by_priority(backlog) -> None:
    done = stats_cli()
    assert done.returncode == 0, done.stderr
    rows = {
        cells[0]: cells[1:]
        for line in done.stdout.splitlines()
        if (cells := [cell.strip() for cell in line.strip("│ ").split("│")])[0]
    }
    assert rows["media"] == ["0", "2", "0", "3", "5"]
    assert rows["meeting"] == ["1", "0", "0", "0", "1"]
    assert rows["delayed"] == ["2"]
    assert rows["dead letters"] == ["3"]


def test_processing_counts_the_task_a_worker_holds(app, redis, start_worker) -> None:
    worker = start_worker(["user"])
    held = sleep.apply_async((600,), {"journal_name": "held"}, queue="user")
    wait_until(lambda: read_journal("held"), "the slow task to start")

    stats = cluster_stats()
    assert stats["processing"] == 1
    assert stats["queues"]["user"]["total"] == 0
    assert stats["workers"]["online"] == 1
    assert stats["workers"]["ids"][0].startswith(f"{worker.name}:")
    assert TaskDispatcher().status(held.id).status is TaskStatus.PROCESSING


def test_workers_online_follow_starts_stops_and_deaths(app, redis, start_worker) -> None:
    def online() -> list[str]:
        return [worker_id.split(":")[0] for worker_id in cluster_stats()["workers"]["ids"]]

    first = start_worker(["media"])
    second = start_worker(["user"], env={"MEETINGTASKS_HEARTBEAT_TTL": "2"})
    assert sorted(online()) == sorted([first.name, second.name])
    assert cluster_stats()["workers"]["online"] == 2

    first.stop()  # warm shutdown: it leaves the roster at once
    assert online() == [second.name]

    second.kill()  # kill -9: it drops out once its heartbeat lapses
    wait_until(lambda: not online(), "the killed worker's heartbeat to lapse")
    assert cluster_stats()["workers"] == {"online": 0, "ids": []}


def test_scheduler_counters_are_cluster_wide(redis) -> None:
    redis.hset(get_keys().scheduler_stats(), mapping={"moved": 7, "recovered": 2})
    assert cluster_stats()["scheduler"] == {"moved": 7, "recovered": 2}


def test_cli_watch_json_prints_fresh_stats_until_interrupted(backlog) -> None:
    command = [sys.executable, "-m", "meetingtasks", "stats", "--json", "--watch"]
    with subprocess.Popen(
        [*command, "--interval", "0.1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        # A test run started in the background ignores SIGINT, and its children inherit
        # that: the watcher must hear Ctrl-C as a terminal's user would send it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as watcher:
        try:
            assert watcher.stdout is not None
            assert json.loads(watcher.stdout.readline())["dlq"] == DEAD
            DeadLetterQueue().add(dead_letter("one-more"))
            refreshed = (json.loads(watcher.stdout.readline())["dlq"] for _ in range(600))
            assert DEAD + 1 in refreshed  # within 600 refreshes, a minute at most
            watcher.send_signal(signal.SIGINT)
            # Read what it still prints: on a full pipe it would block, SIGINT or not.
            watcher.communicate(timeout=60)
            assert watcher.returncode == 0
        finally:
            watcher.kill()
