"""Tasks that exist only for the tests; workers load them with ``-I tests.worker_tasks``.

They write what happened (order, attempts, limits hit) to Redis lists under the test
namespace, where the test process reads it back.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time

import redis as redis_py
from celery.exceptions import SoftTimeLimitExceeded

from meetingtasks.app import app
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import Permanent, Retryable
from meetingtasks.policies.routing import Route, get_route_table
from meetingtasks.store import get_redis

get_route_table().register(Route(type="test.flaky", queue="user", max_retries=4, timeout=3))
get_route_table().register(Route(type="test.slow", queue="user", max_retries=0, timeout=1))
get_route_table().register(Route(type="test.sleep", queue="user", max_retries=0, timeout=60))
get_route_table().register(Route(type="test.until_fixed", queue="meeting", max_retries=0))
get_route_table().register(Route(type="test.rendezvous", queue="ai", max_retries=0, timeout=90))
get_route_table().register(Route(type="test.crash", queue="user", max_retries=0, timeout=60))
get_route_table().register(Route(type="test.leak", queue="user", max_retries=0, timeout=60))
get_route_table().register(Route(type="test.own_io", queue="ai", max_retries=0, timeout=60))


def journal(name: str) -> str:
    """The Redis list a test task writes its observations to."""
    return f"mttest:journal:{name}"


def read_journal(name: str) -> list[dict]:
    return [json.loads(item) for item in get_redis().lrange(journal(name), 0, -1)]


def _note(name: str, **entry: object) -> None:
    get_redis().rpush(journal(name), json.dumps({"at": time.time(), **entry}))


@app.task(name="test.record", bind=True)
def record(self, label: str, journal_name: str = "order", sleep: float = 0.0) -> str:
    """Note the label (with the message's priority) in execution order."""
    priority = self.request.delivery_info.get("priority")
    _note(journal_name, label=label, priority=priority, id=self.request.id)
    if sleep:
        time.sleep(sleep)
    return label


@app.task(name="test.flaky", bind=True)
def flaky(self, journal_name: str, fail_times: int, permanent: bool = False) -> int:
    """Fail the first ``fail_times`` attempts, then succeed; each attempt is noted."""
    _note(journal_name, retries=self.request.retries)
    if permanent:
        raise Permanent("this input can never work")
    if self.request.retries < fail_times:
        raise Retryable(f"transient failure on attempt {self.request.retries + 1}")
    return self.request.retries


@app.task(name="test.sleep", bind=True)
def sleep(
    self, seconds: float, journal_name: str = "sleep", ignore_soft_limit: bool = False
) -> str:
    """Sleep; note whether the soft time limit interrupted it."""
    _note(journal_name, event="started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            _note(journal_name, event="soft_limit")
            if not ignore_soft_limit:
                raise
    _note(journal_name, event="finished")
    return "slept"


@app.task(name="test.slow", bind=True)
def slow(self, seconds: float, journal_name: str = "slow") -> str:
    """test.sleep under a route whose timeout (1 s) is the only limit it gets."""
    return sleep.run(seconds, journal_name)


@app.task(name="test.cooperative", bind=True)
def cooperative(self, journal_name: str = "cooperative") -> str:
    """Works in small steps until told it was cancelled."""
    _note(journal_name, event="started")
    for _ in range(2000):
        if self.cancelled():
            _note(journal_name, event="noticed")
            return "stopped early"
        time.sleep(0.05)
    _note(journal_name, event="finished")
    return "finished"


@app.task(name="test.until_fixed", bind=True)
def until_fixed(self, flag: str, journal_name: str = "fixed") -> str:
    """Fails for good until the Redis key ``flag`` exists: a bug fixed, then requeued."""
    _note(journal_name, priority=self.request.delivery_info.get("priority"),
          queue=self.request.delivery_info.get("routing_key"))  # fmt: skip
    if not get_redis().exists(flag):
        raise Permanent(f"{flag} is not set")
    return "fixed"


@app.task(name="test.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="test.total")
def total(numbers: list[int]) -> int:
    """A chord's body: the results of its header, added up."""
    return sum(numbers)


@app.task(name="test.context", bind=True)
def context(self) -> dict:
    """What the worker saw of this run's message."""
    request = self.request
    headers = request.headers or {}
    return {
        "id": request.id, "root_id": request.root_id, "parent_id": request.parent_id,
        "retries": request.retries, "priority": request.delivery_info.get("priority"),
        "queue": request.delivery_info.get("routing_key"),
        "headers": {k: v for k, v in headers.items() if not k.startswith("mt_")},
    }  # fmt: skip


@app.task(name="test.spawn", bind=True)
def spawn(self) -> str:
    """Sends a child from inside a run: the child's parent and root are this run."""
    return str(context.apply_async(queue="media").id)


@app.task(name="test.retry_explicitly", bind=True)
def retry_explicitly(self, journal_name: str, times: int) -> int:
    """Calls Celery's ``self.retry`` itself (not through a Retryable error)."""
    _note(journal_name, retries=self.request.retries)
    if self.request.retries < times:
        raise self.retry(countdown=0.2, max_retries=times)
    return self.request.retries


@app.task(name="test.boom")
def boom() -> None:
    raise Permanent("boom")


@app.task(name="test.rendezvous")
def rendezvous(counter: str, expected: int, patience: float = 60.0) -> int:
    """Arrive, then wait until ``expected`` runs have arrived (or ``patience`` runs out):
    returns how many had. All of them meet only if all run at the same time."""
    redis = get_redis()
    redis.incr(counter)
    deadline = time.monotonic() + patience
    while (arrived := int(redis.get(counter) or 0)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return arrived


@app.task(name="test.kept_here")
def kept_here() -> None:
    """Does nothing; tests/test_retention.py gives it a route with a retention."""


# -- tasks that hurt their own pool process (tests/test_poison.py) -------------------------

_leaked: list[bytearray] = []


@app.task(name="test.crash", bind=True)
def crash(self, how: str, journal_name: str = "crash") -> None:
    """Die under the worker: ``exit`` (os._exit), ``segfault``, ``oom`` (300 MB, then the
    SIGKILL the OOM killer sends), or ``memory_error`` (an allocation that fails)."""
    _note(journal_name, pid=os.getpid(), how=how)
    if how == "exit":
        os._exit(1)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "oom":
        hog = bytearray(300 * 1024 * 1024)
        hog[::4096] = b"x" * len(hog[::4096])
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "memory_error":
        bytearray(1 << 60)
    raise Permanent(f"unknown crash {how!r}")


@app.task(name="test.leak", bind=True)
def leak(self, megabytes: int, journal_name: str = "leak") -> None:
    """Keep ``megabytes`` more for good (a leak); note the process and its memory."""
    chunk = bytearray(megabytes * 1024 * 1024)
    chunk[::4096] = b"x" * len(chunk[::4096])
    _leaked.append(chunk)
    with open("/proc/self/status") as status:
        rss = int(next(line.split()[1] for line in status if line.startswith("VmRSS:")))
    _note(journal_name, pid=os.getpid(), rss_kib=rss)


_own_client: tuple[str, redis_py.Redis] | None = None


@app.task(name="test.own_io", bind=True)
def own_io(self, n: int, counter: str) -> int:
    """What an AI task does besides waiting on a model: 200 ms, then two round trips of
    its own on a module-level client (a pipeline of SETNX and INCR, then a SET). Returns
    the id of the result backend its thread uses."""
    global _own_client
    url = get_settings().redis_url
    if _own_client is None or _own_client[0] != url:
        _own_client = (url, redis_py.Redis.from_url(url, max_connections=1000))
    client = _own_client[1]
    time.sleep(0.2)
    with client.pipeline() as pipe:
        pipe.setnx(f"{counter}:{n}", 1)
        pipe.incr(counter)
        pipe.execute()
    client.set(f"{counter}:last", n)
    return id(self.backend)
