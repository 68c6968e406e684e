"""pytest plugin: test your own tasks against a private Redis and a real worker.

    # conftest.py of your service
    pytest_plugins = ["meetingtasks.testing"]

    # test_billing.py
    from billing.tasks import charge

    def test_a_charge_runs(meetingtasks_worker):
        assert charge.delay(5).get(timeout=10) == "charged 5"

The plugin points meetingtasks at a private ``redis-server`` of its own (a free port on
127.0.0.1, AOF on, never the Redis at 6379) before any setting is read, so load it from
a conftest.py; workers run the real send and fetch path, retries and delays included.

Fixtures:
- ``meetingtasks_redis_server`` (session): the private server; ``stop()``, ``start()``
  and ``restart()`` it to test what survives.
- ``meetingtasks_redis``: a client on it, on an emptied database (every test starts clean).
- ``meetingtasks_app``: the Celery app, on that database.
- ``meetingtasks_worker``: a worker inside the test process (Celery's ``start_worker``,
  solo pool) for every queue; the tasks your test module imported are registered.
- ``meetingtasks_worker_process``: starts ``celery -A meetingtasks worker`` processes
  (``-Q`` queues, ``-I`` your task modules), stopped after the test; ``kill()`` one for a
  crash.

Celery's own fixtures, from pytest-celery (the ``testing`` extra installs it: its plugin
gives ``celery.contrib.pytest``'s fixtures, and its Docker parts stay unused unless
asked for), are answered by meetingtasks here, so a test written against Celery's
documentation runs unchanged:
- ``celery_app``: ``meetingtasks_app``, with the test's ``celery_config`` (and
  ``@pytest.mark.celery(...)``) applied for the test, except the broker and the result
  backend: those stay the private Redis;
- ``celery_worker``: a worker inside the test process, as Celery's, honouring
  ``celery_includes``, ``celery_worker_pool`` and ``celery_worker_parameters``, on every
  declared queue;
- ``celery_session_app``, ``celery_session_worker``: the same for the whole session (its
  tests share one database: nothing empties it between them).

Options: ``--meetingtasks-namespace`` (default ``mttest``) names the keys of the run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from celery.contrib.testing.worker import start_worker

from meetingtasks.app import app
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import ConfigurationError
from meetingtasks.policies.routing import get_route_table
from meetingtasks.run.embedded_redis import RedisServer, free_port, redis_reachable
from meetingtasks.store import get_redis

_names = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--meetingtasks-namespace", default="mttest", help="key namespace of the test run"
    )


def pytest_configure(config: pytest.Config) -> None:
    """Point meetingtasks at the private server's port before anything reads a setting
    (worker processes inherit the environment)."""
    if get_settings.cache_info().currsize:
        raise ConfigurationError(
            "meetingtasks read its settings before meetingtasks.testing could point them at "
            "a private Redis: load the plugin from your top conftest.py (pytest_plugins)"
        )
    port = free_port()
    os.environ["MEETINGTASKS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    os.environ["MEETINGTASKS_NAMESPACE"] = config.getoption("--meetingtasks-namespace")
    config.stash[_PORT] = port


_PORT = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def meetingtasks_redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """The run's private redis-server (AOF, fsync always); tests may restart it."""
    server = RedisServer(
        port=request.config.stash[_PORT], directory=tmp_path_factory.mktemp("redis")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def meetingtasks_redis(meetingtasks_redis_server: RedisServer) -> Iterator[redis_py.Redis]:
    """A client on an emptied database (the server is started again if a test killed it)."""
    if not redis_reachable(meetingtasks_redis_server.url):
        meetingtasks_redis_server.start()
    client = get_redis()
    client.flushall()
    yield client


@pytest.fixture
def meetingtasks_app(meetingtasks_redis: redis_py.Redis) -> Any:
    """The Celery app of meetingtasks, on the private Redis, with its tasks registered
    (as a worker or a first send would register them)."""
    app.loader.import_default_modules()
    return app


@pytest.fixture
def meetingtasks_worker(meetingtasks_app: Any) -> Iterator[Any]:
    """A worker inside the test process, consuming every declared queue."""
    queues = ",".join(get_route_table().queues)
    with start_worker(
        meetingtasks_app, pool="solo", perform_ping_check=False, queues=queues,
        shutdown_timeout=30.0,
    ) as worker:  # fmt: skip
        yield worker


#: Settings a test's ``celery_config`` may not change: the private Redis stays.
_KEPT_SETTINGS = frozenset(
    {"broker_url", "result_backend", "broker_transport", "broker_transport_options"}
)


@pytest.fixture
def celery_app(
    request: pytest.FixtureRequest, meetingtasks_app: Any, celery_config: dict[str, Any]
) -> Iterator[Any]:
    """Celery's ``celery_app``: meetingtasks' app, with the test's settings applied."""
    mark = request.node.get_closest_marker("celery")
    config = {**celery_config, **(mark.kwargs if mark else {})}
    changed = {key: value for key, value in config.items() if key not in _KEPT_SETTINGS}
    before = {key: meetingtasks_app.conf.get(key) for key in changed}
    meetingtasks_app.conf.update(changed)
    yield meetingtasks_app
    meetingtasks_app.conf.update(before)


@pytest.fixture
def celery_worker(
    celery_app: Any,
    celery_includes: Any,
    celery_worker_pool: Any,
    celery_worker_parameters: Any,
) -> Iterator[Any]:
    """Celery's ``celery_worker``, on meetingtasks' app and every declared queue."""
    with _celery_worker(celery_app, celery_includes, celery_worker_pool,
                        celery_worker_parameters) as worker:  # fmt: skip
        yield worker


@pytest.fixture(scope="session")
def celery_session_app(meetingtasks_redis_server: RedisServer) -> Any:
    """Celery's ``celery_session_app``: meetingtasks' app for the whole session."""
    if not redis_reachable(meetingtasks_redis_server.url):
        meetingtasks_redis_server.start()
    app.loader.import_default_modules()
    return app


@pytest.fixture(scope="session")
def celery_session_worker(
    celery_session_app: Any,
    celery_includes: Any,
    celery_worker_pool: Any,
    celery_worker_parameters: Any,
) -> Iterator[Any]:
    """Celery's ``celery_session_worker``, on meetingtasks' app and every queue."""
    with _celery_worker(celery_session_app, celery_includes, celery_worker_pool,
                        celery_worker_parameters) as worker:  # fmt: skip
        yield worker


@contextlib.contextmanager
def _celery_worker(celery: Any, includes: Any, pool: Any, parameters: Any) -> Iterator[Any]:
    for module in includes:
        celery.loader.import_task_module(module)
    options = {
        "queues": ",".join(get_route_table().queues), "perform_ping_check": False,
        "shutdown_timeout": 30.0, **parameters,
    }  # fmt: skip
    with start_worker(celery, pool=pool, **options) as worker:
        yield worker


@dataclass
class WorkerSubprocess:
    """``celery -A meetingtasks worker`` in its own process group, logging to a file."""

    queues: list[str]
    log_dir: Path
    cwd: Path
    include: list[str] = field(default_factory=list)
    #: None leaves -c (and -P) out: the queues' [worker] table in routes/ decides.
    concurrency: int | None = 1
    pool: str | None = "prefork"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"w{os.getpid()}-{next(_names)}@test")
    #: Celery's start-up sync with other workers and its gossip (off: they add seconds).
    mingle_and_gossip: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name.split('@')[0]}.log"

    def start(self, wait: bool = True, timeout: float = 60.0) -> WorkerSubprocess:
        command = [
            sys.executable, "-m", "celery", "-A", "meetingtasks", "worker",
            "-Q", ",".join(self.queues),
            *(["-c", str(self.concurrency)] if self.concurrency is not None else []),
            *(["-P", self.pool] if self.pool is not None else []),
            "-n", self.name, "-l", "INFO",
            *([] if self.mingle_and_gossip else ["--without-gossip", "--without-mingle"]),
            *(f"--include={module}" for module in self.include), *self.extra_args,
        ]  # fmt: skip
        path = os.pathsep.join(filter(None, [str(self.cwd), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, **self.env}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker consumes (it logs 'ready.' once its queues are bound)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ConfigurationError(f"worker {self.name} exited:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise ConfigurationError(f"worker {self.name} not ready in {timeout}s:\n{self.log()}")

    def rss_bytes(self) -> int:
        """Resident memory of the worker: its main process and its pool processes."""
        assert self.process is not None
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> None:
        """Warm shutdown (SIGTERM): running tasks finish, then the worker exits."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_group()
        self.process = None

    def kill(self) -> None:
        """kill -9 of the main process and its pool children, as a crash would."""
        if self.process:
            self._kill_group()
            self.process.wait()
        self.process = None

    def _kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def meetingtasks_worker_process(
    request: pytest.FixtureRequest, meetingtasks_app: Any, tmp_path: Path
) -> Iterator[Callable[..., WorkerSubprocess]]:
    """Start real worker processes; every one still running is killed after the test.

    ``start(queues, include=["my.tasks"], concurrency=2, env={...}, wait=True)``.
    """
    started: list[WorkerSubprocess] = []

    def start(queues: list[str], wait: bool = True, **options: Any) -> WorkerSubprocess:
        worker = WorkerSubprocess(
            queues=queues, log_dir=tmp_path / "workers", cwd=request.config.rootpath, **options
        )
        started.append(worker)
        return worker.start(wait=wait)

    yield start
    for worker in started:
        worker.kill()
