"""How fast an idle worker takes a task a producer without our package pushed on a
queue's inbox (``docs/wire.md``): from the push to the task's start.

One message of Celery's protocol 2, built by hand as a foreign client builds it (no
doorbell token, nothing of ours), is pushed at a time on ``default:inbox`` while one
``-Q default`` worker idles; the next goes once the previous one ran. The start is the
``started_at`` our worker records as it takes the task; both clocks are this machine's.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.apps import OURS, load
from bench.child import Progress
from bench.stats import summary_ms
from bench.workers import worker

#: Seconds between two pushes (the worker idles in between, as at low load).
PAUSE = 0.05


def message(task: str, queue: str) -> dict[str, Any]:
    """A protocol-2 message as a foreign client writes it (celery-node's fields)."""
    task_id = str(uuid.uuid4())
    return {
        "body": base64.b64encode(json.dumps([[], {}, {}]).encode()).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"lang": "js", "task": task, "id": task_id},
        "properties": {"correlationId": task_id, "replyTo": "", "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "delivery_mode": 2, "delivery_tag": str(uuid.uuid4()), "priority": 6},
    }  # fmt: skip


def measure(n: int, url: str, log_dir: str) -> dict[str, Any]:
    bench_app = load(OURS)
    prefix = os.environ.get("MEETINGTASKS_NAMESPACE", "mt") + ":"
    client = redis.Redis.from_url(url, decode_responses=True)
    report = Progress(n)
    delays = []
    with worker(bench_app, 2, Path(log_dir)) as running:
        first = message(bench_app.noop, bench_app.queue)  # also waits for the worker
        client.lpush(f"{prefix}{bench_app.queue}:inbox", json.dumps(first))
        running.wait_for(lambda: _started(client, prefix, first), "the first foreign task")
        for i in range(n):
            time.sleep(PAUSE)
            sent = message(bench_app.noop, bench_app.queue)
            pushed = time.time()
            client.lpush(f"{prefix}{bench_app.queue}:inbox", json.dumps(sent))
            running.wait_for(lambda m=sent: _started(client, prefix, m), "a foreign task")
            delays.append(float(_started(client, prefix, sent)) - pushed)
            report(i + 1)
    return {**summary_ms(delays), "n": n}


def _started(client: redis.Redis, prefix: str, sent: dict[str, Any]) -> str | None:
    started: Any = client.hget(f"{prefix}status:{sent['headers']['id']}", "started_at")
    return started if isinstance(started, str) else None
