"""A minimal plain Celery app with default settings: the baseline of every comparison.

Only the broker and result backend are set (the benchmark's private Redis, from
``BENCH_REDIS_URL``); serialisation is Celery's default, JSON. Its worker is
``celery -A bench.plain_app worker``.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from bench.config import WAIT_SECONDS

NOOP = "bench.noop"
WAIT = "bench.wait"


def _redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        # Never fall back to a default Redis: the benchmark runs on its own server only.
        raise RuntimeError("BENCH_REDIS_URL is not set: run the benchmark with scripts/bench")
    return url


app = Celery("bench_plain", broker=_redis_url(), backend=_redis_url())


@app.task(name=NOOP)
def noop() -> None:
    """Does nothing, like our ``system.noop``."""


@app.task(name=WAIT)
def wait() -> None:
    """Waits, like our ``bench.wait`` (``bench/ai_tasks.py``)."""
    time.sleep(WAIT_SECONDS)
