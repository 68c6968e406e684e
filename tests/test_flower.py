"""Flower works with the app out of the box: it sees our worker and our finished tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meetingtasks.run.embedded_redis import free_port
from tests.support.workers import REPO


@pytest.fixture
def flower(app, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "meetingtasks", "flower",
         f"--port={port}", "--address=127.0.0.1"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: httpx.get(f"{url}/healthcheck", timeout=2).text == "OK", "Flower to start")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def poll(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_flower_shows_our_worker_and_a_finished_task(app, flower: str, start_worker) -> None:
    worker = start_worker(["user", "default"])
    result = app.send_task("system.echo", kwargs={"value": "hello flower"})
    assert result.get(timeout=60) == "hello flower"

    workers = poll(
        lambda: httpx.get(f"{flower}/api/workers", params={"refresh": 1}, timeout=10).json(),
        "Flower to list the worker",
    )
    assert worker.name in workers
    assert {q["name"] for q in workers[worker.name]["active_queues"]} == {"user", "default"}

    def finished_task() -> dict | None:
        info = httpx.get(f"{flower}/api/task/info/{result.id}", timeout=10)
        return (
            info.json() if info.status_code == 200 and info.json()["state"] == "SUCCESS" else None
        )

    task = poll(finished_task, "Flower to see the task succeed")
    assert task["name"] == "system.echo"
    assert task["routing_key"] == "default"
    assert task["worker"] == worker.name
