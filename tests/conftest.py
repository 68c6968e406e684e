"""Shared fixtures, on the plugin service teams use (``meetingtasks.testing``): a private
redis-server for the session, real worker processes that load the test tasks.

The plugin points meetingtasks at the private server before any setting is read;
worker subprocesses inherit that environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from meetingtasks.run.embedded_redis import RedisServer

if TYPE_CHECKING:  # the plugin is loaded by pytest (which rewrites its asserts), not here
    from meetingtasks.testing import WorkerSubprocess

pytest_plugins = ["meetingtasks.testing", "pytester"]

# Tests that listen for Celery's task events subscribe a moment before they send: every
# task event goes out here (tests/test_listeners.py tests the default, "listened").
os.environ.setdefault("MEETINGTASKS_TASK_EVENTS", "always")


@pytest.fixture(scope="session")
def redis_server(meetingtasks_redis_server: RedisServer) -> RedisServer:
    """The session's private redis-server (AOF, fsync always); tests may restart it."""
    return meetingtasks_redis_server


@pytest.fixture
def redis(meetingtasks_redis: Any) -> Any:
    """A clean database for this test."""
    return meetingtasks_redis


@pytest.fixture
def app(meetingtasks_app: Any) -> Any:
    import tests.worker_tasks  # noqa: F401  (registers the test tasks here too)

    return meetingtasks_app


@pytest.fixture
def start_worker(
    app: Any, meetingtasks_worker_process: Callable[..., WorkerSubprocess]
) -> Callable[..., WorkerSubprocess]:
    """Start real worker processes that run the test tasks (tests/worker_tasks.py)."""

    def start(queues: list[str], wait: bool = True, **options: Any) -> WorkerSubprocess:
        return meetingtasks_worker_process(
            queues, wait=wait, include=["tests.worker_tasks"], **options
        )

    return start
