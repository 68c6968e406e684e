"""Submit -> result latency without the gateway, at a stated rate (open loop).

The plain Celery equivalent of the WebSocket end-to-end figure: one client sends no-op
tasks at ``rate`` per second to a default worker of its app (two processes), and a
subscriber learns each result the way Celery's own result consumer does, from the
result backend's Redis Pub/Sub message. Latency = result message received - send started.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.apps import load
from bench.child import Progress
from bench.stats import summary_ms
from bench.workers import worker

WARMUP_TASKS = 20
#: How long to wait for the last results after the last send.
DRAIN_SECONDS = 30.0


def measure(
    app: str, rate: float, duration: float, log_dir: str, concurrency: int = 2
) -> dict[str, Any]:
    # The subscriber thread must get the GIL soon after its socket is readable.
    sys.setswitchinterval(0.0005)
    bench_app = load(app)
    total = max(1, int(rate * duration))
    report = Progress(total)
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    with worker(bench_app, concurrency, Path(log_dir)) as running:
        # Also waits for the worker to be up: the first result comes once it consumes.
        for result in [bench_app.send() for _ in range(WARMUP_TASKS)]:
            result.get(timeout=120)
        subscriber = _Subscriber(bench_app.app.backend.client, bench_app.result_prefix())
        subscriber.start(received)
        try:
            start = time.monotonic()
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                task_id = str(uuid.uuid4())
                sent[task_id] = time.monotonic()
                bench_app.send(task_id=task_id)
                report(i + 1)
            last_send = time.monotonic()
            deadline = last_send + DRAIN_SECONDS
            while len(received.keys() & sent.keys()) < total and time.monotonic() < deadline:
                if not running.alive():
                    raise RuntimeError(f"worker exited:\n{running.log_tail()}")
                time.sleep(0.05)
        finally:
            subscriber.stop()
    latencies = [received[t] - sent[t] for t in sent if t in received]
    return {
        **summary_ms(latencies),
        "sent": total,
        "missing": total - len(latencies),
        "rate": rate,
        "achieved_rate": round(total / max(last_send - start, 1e-9), 1),
        "concurrency": concurrency,
    }


class _Subscriber:
    """PSUBSCRIBE to the result keys' channels; records when each SUCCESS arrives."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, received: dict[str, float]) -> None:
        self.thread = threading.Thread(target=self._run, args=(received,), daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("result subscriber did not start")

    def _run(self, received: dict[str, float]) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(f"{self.prefix}*")
        pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        self.ready.set()
        while not self.stopping.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            now = time.monotonic()
            meta = json.loads(message["data"])
            if meta.get("status") == "SUCCESS":
                received.setdefault(meta["task_id"], now)
        pubsub.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
