"""A minimal plain Celery app with default settings: the baseline of every comparison.

Only the broker and result backend are set (the benchmark's private Redis, from
``BENCH_REDIS_URL``); serialisation is Celery's default, JSON. Its worker is
``celery -A bench.plain_app worker``.

A baseline must be plain Celery: measured in a process that never imported meetingtasks
(which could change nothing for it, but a benchmark should not have to trust that). The
worker checks as it starts, and every child process that measured plain Celery checks
before it reports (``bench/child.py``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from celery import Celery
from celery.signals import worker_init

from bench.config import WAIT_SECONDS
from bench.own_io import OWN_IO, own_io_work

NOOP = "bench.noop"
WAIT = "bench.wait"


def _redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        # Never fall back to a default Redis: the benchmark runs on its own server only.
        raise RuntimeError("BENCH_REDIS_URL is not set: run the benchmark with scripts/bench")
    return url


app = Celery("bench_plain", broker=_redis_url(), backend=_redis_url())


def meetingtasks_modules() -> list[str]:
    """The meetingtasks modules this process imported (none, for a fair baseline)."""
    return sorted(name for name in sys.modules if name.split(".")[0] == "meetingtasks")


@worker_init.connect
def _check_worker(sender: Any = None, **_: Any) -> None:
    if sender is not None and sender.app is app and meetingtasks_modules():
        print(f"plain Celery's worker imported {meetingtasks_modules()}", file=sys.stderr)
        os._exit(70)


@app.task(name=NOOP)
def noop() -> None:
    """Does nothing, like our ``system.noop``."""


@app.task(name="bench.cost_ignored", ignore_result=True)
def cost_ignored() -> None:
    """Does nothing; its result is not kept (the Redis cost comparison)."""


@app.task(name="bench.cost_kept")
def cost_kept() -> str:
    """Does nothing and keeps a small result (the Redis cost comparison)."""
    return "ok"


@app.task(name=WAIT)
def wait() -> None:
    """Waits, like our ``bench.wait`` (``bench/ai_tasks.py``)."""
    time.sleep(WAIT_SECONDS)


@app.task(name=OWN_IO)
def own_io() -> None:
    """Waits, then two round trips of its own, like our ``bench.own_io``."""
    own_io_work(_redis_url())
