"""Flower works with the app out of the box: it sees our worker and our finished tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meetingtasks.run.embedded_redis import free_port
from tests.support.waiting import wait_until
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
        wait_until(
            lambda: httpx.get(f"{url}/healthcheck", timeout=2).text == "OK",
            "Flower to start",
            ignoring=(httpx.HTTPError,),
            interval=0.25,
        )
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_flower_shows_our_worker_and_a_finished_task(app, flower: str, start_worker) -> None:
    worker = start_worker(["user", "default"])
    result = app.send_task("system.echo", kwargs={"value": "hello flower"})
    assert result.get(timeout=60) == "hello flower"

    workers = wait_until(
        lambda: httpx.get(f"{flower}/api/workers", params={"refresh": 1}, timeout=10).json(),
        "Flower to list the worker",
        ignoring=(httpx.HTTPError,),
        interval=0.25,
    )
    assert worker.name in workers
    assert {q["name"] for q in workers[worker.name]["active_queues"]} == {"user", "default"}

    def finished_task() -> dict | None:
        info = httpx.get(f"{flower}/api/task/info/{result.id}", timeout=10)
        return (
            info.json() if info.status_code == 200 and info.json()["state"] == "SUCCESS" else None
        )

    task = wait_until(
        finished_task, "Flower to see the task succeed", ignoring=(httpx.HTTPError,), interval=0.25
    )
    assert task["name"] == "system.echo"
    assert task["routing_key"] == "default"
    assert task["worker"] == worker.name
