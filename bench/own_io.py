"""What an AI task does besides waiting on a model, for both apps alike: 200 ms, then two
Redis round trips of its own on a module-level client (a pipeline of SETNX and INCR, then
a SET), as a task that stores a transcript or bumps a counter does. No meetingtasks
import: plain Celery's worker runs it too."""

from __future__ import annotations

import itertools
import os
import time

import redis

from bench.config import WAIT_SECONDS

OWN_IO = "bench.own_io"
#: The key the tasks count themselves in.
COUNTER = "bench:own_io"

_clients: dict[str, redis.Redis] = {}
_numbers = itertools.count()


def own_io_work(url: str) -> None:
    # redis-py 8 caps a pool at 100 connections and raises past it; 500 threads need more.
    client = _clients.get(url) or _clients.setdefault(
        url, redis.Redis.from_url(url, max_connections=1000)
    )
    time.sleep(WAIT_SECONDS)
    n = f"{os.getpid()}:{next(_numbers)}"
    with client.pipeline() as pipe:
        pipe.setnx(f"{COUNTER}:{n}", 1)
        pipe.incr(COUNTER)
        pipe.execute()
    client.set(f"{COUNTER}:last", n)
