"""Shared fixtures: a private redis-server, the app pointed at it, real worker processes.

The Redis URL is chosen before anything imports meetingtasks (settings are read once
per process), and worker subprocesses inherit it through the environment.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Before the first import of meetingtasks: its settings are read once per process.
_PORT = _free_port()
REDIS_URL = f"redis://127.0.0.1:{_PORT}/0"
os.environ["MEETINGTASKS_REDIS_URL"] = REDIS_URL
os.environ["MEETINGTASKS_NAMESPACE"] = "mttest"

from meetingtasks.base.settings import get_settings  # noqa: E402
from meetingtasks.run.embedded_redis import RedisServer, redis_reachable  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

assert get_settings().redis_url == REDIS_URL, (
    "meetingtasks was imported before conftest set its URL"
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's private redis-server (AOF, fsync always); tests may restart it."""
    server = RedisServer(port=_PORT, directory=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer):
    """A clean database for this test (the server is restarted if a test killed it)."""
    from meetingtasks.store import get_redis

    if not redis_reachable(redis_server.url):
        redis_server.start()
    client = get_redis()
    assert client.connection_pool.connection_kwargs["port"] == redis_server.port
    client.flushall()
    yield client


@pytest.fixture
def app(redis):
    import tests.worker_tasks  # noqa: F401  (registers the test tasks here too)
    from meetingtasks import app as celery_app

    return celery_app


@pytest.fixture
def start_worker(app, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; every one still running is stopped after the test."""
    started: list[WorkerProcess] = []

    def start(queues: list[str], wait: bool = True, **options: object) -> WorkerProcess:
        worker = WorkerProcess(queues=queues, log_dir=tmp_path / "workers", **options)  # type: ignore[arg-type]
        started.append(worker)
        return worker.start(wait=wait)

    yield start
    for worker in started:
        worker.kill()
