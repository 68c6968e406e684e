"""Redis memory under sustained load: no-op tasks (``ignore_result``, default settings)
sent at a steady rate for minutes while one worker, at its default concurrency, drains
them; Redis's used memory is read every second.

The sender keeps to ``rate`` while the queue stays short. When the worker falls behind
(more than two seconds of tasks waiting) it waits for the queue to come down, so the
figure is the rate this machine sustains, not a backlog growing without end. Memory is
flat when it no longer grows once the shortest retention window (a minute) has passed:
the growth from 30% of the run (minute 3 of 10) to its end is the figure.

After the run, the records each of the last tasks left behind (our status record and
result key, or plain Celery's result key) are measured with ``MEMORY USAGE``: the bytes
a completed ``ignore_result`` task keeps.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

import redis

from bench.apps import OURS, load
from bench.child import Progress
from bench.workers import worker

#: Seconds of tasks allowed to wait before the sender pauses for the worker.
BACKLOG_SECONDS = 2.0
#: Where flatness is measured from, as a fraction of the run (minute 3 of 10), and the
#: seconds averaged at each end.
FLAT_FROM = 0.3
WINDOW = 20.0
#: The last tasks whose records are measured after the run.
MEASURED = 200


def soak(app: str, rate: float, seconds: float, log_dir: str) -> dict[str, Any]:
    bench_app = load(app)
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    baseline = _used(client)
    series: list[tuple[float, int]] = []
    last_ids: deque[str] = deque(maxlen=MEASURED)
    sent, paused = 0, 0.0
    report = Progress(int(seconds))
    with (
        worker(bench_app, None, Path(log_dir)) as running,
        bench_app.app.connection_for_write() as connection,
    ):
        running.wait_for(bench_app.send().ready, "first task run")  # consuming
        started = time.monotonic()
        next_sample = next_check = started

        def sample(now: float) -> None:
            nonlocal next_sample
            if now >= next_sample:
                series.append((round(now - started, 1), _used(client)))
                next_sample += 1.0
                report(int(now - started))

        while (now := time.monotonic()) - started < seconds:
            sample(now)
            if now >= next_check:
                next_check = now + 0.25
                if not running.alive():
                    raise RuntimeError(f"worker exited:\n{running.log_tail()}")
                if bench_app.queue_depth(connection) > rate * BACKLOG_SECONDS:
                    # The worker is behind: wait until half the backlog is gone, then go
                    # on at the rate from there (no burst to make up for the pause).
                    while bench_app.queue_depth(connection) > rate * BACKLOG_SECONDS / 2:
                        sample(time.monotonic())
                        if time.monotonic() - started >= seconds:
                            break
                        time.sleep(0.05)
                    paused += time.monotonic() - now
                    continue
            if sent < (now - started - paused) * rate:
                last_ids.append(bench_app.send(ignore_result=True).id)
                sent += 1
            else:
                time.sleep(min(0.001, max(0.0, next_sample - now)))
        sending = time.monotonic() - started
        deadline = time.monotonic() + 300
        while bench_app.queue_depth(connection) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the last runs end
        kept = _kept_bytes(client, app, list(last_ids))
    used = [value for _, value in series]
    flat_from = [v for t, v in series if abs(t - FLAT_FROM * seconds) <= WINDOW / 2]
    at_end = [v for t, v in series if t >= seconds - WINDOW]
    growth = (statistics.mean(at_end) / statistics.mean(flat_from) - 1) if flat_from else None
    return {
        "rate": round(sent / sending, 1),
        "sent": sent,
        "seconds": round(sending, 1),
        "paused_seconds": round(paused, 1),
        "peak_mb": round(max(used) / 1_048_576, 2),
        "baseline_mb": round(baseline / 1_048_576, 2),
        "growth_percent": round(100 * growth, 2) if growth is not None else None,
        "kept_bytes_per_task": kept["bytes"],
        "kept_ttl_seconds": kept["ttl"],
        "series": series,
    }


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _kept_bytes(client: redis.Redis, app: str, task_ids: list[str]) -> dict[str, Any]:
    """Mean bytes the records of ``task_ids`` take now (ours: one per task, result
    included; Celery's: its result key), and their TTL."""
    if app == OURS:
        from meetingtasks.base.keys import get_keys

        keys = get_keys()
        names = [[keys.status(i)] for i in task_ids]
    else:
        prefix = load(app).result_prefix()
        names = [[f"{prefix}{i}"] for i in task_ids]
    pipe = client.pipeline(transaction=False)
    for key in (k for group in names for k in group):
        pipe.memory_usage(key, samples=0)
    sizes = [size or 0 for size in pipe.execute()]
    ttl = client.ttl(names[-1][0]) if names else -2
    return {"bytes": round(sum(sizes) / len(task_ids)) if task_ids else 0, "ttl": ttl}
