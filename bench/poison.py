"""Poison among good work: 1,000 hostile messages mixed into 10,000 good tasks.

A hostile producer's repertoire (``BAD_KINDS``: not JSON, not UTF-8, a number beyond a
double, a body not base64 or of the wrong shape, a failing kombu type tag, a delivery tag
of the wrong type, a refused content type) is pushed straight onto the queue list,
one bad message after every ten good ones, each with its doorbell token; then two
workers drain it. Reported: good tasks done, bad ones set aside, the time from the
workers' start to the last good task, and the workers still alive at the end.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.apps import OURS, load
from bench.child import Progress
from bench.workers import worker

Mutation = Callable[[dict[str, Any]], bytes]


def _json(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def _set(path: str, value: Any) -> Mutation:
    *parents, last = path.split(".")

    def mutate(message: dict[str, Any]) -> bytes:
        target = message
        for name in parents:
            target = target[name]
        target[last] = value
        return _json(message)

    return mutate


def _raw(old: bytes, new: bytes) -> Mutation:
    def mutate(message: dict[str, Any]) -> bytes:
        message["headers"]["note"] = "PLACEHOLDER"
        return _json(message).replace(old, new)

    return mutate


BAD_KINDS: dict[str, Mutation] = {
    "not JSON": lambda message: b"\x80 not json at all",
    "not UTF-8": _raw(b"PLACEHOLDER", b"\xff\xfe"),
    "number beyond a double": _raw(b'"PLACEHOLDER"', b"1e400"),
    "body not base64": _set("body", "!!!not base64!!!"),
    "body of the wrong shape": _set("body", base64.b64encode(b'{"args": 1}').decode()),
    "failing type tag": _set("headers.when", {"__type__": "datetime", "__value__": "never"}),
    "delivery tag an object": _set("properties.delivery_tag", {"an": "object"}),
    "pickle": _set("content-type", "application/x-python-serialize"),
}


def measure(good: int, bad: int, log_dir: str) -> dict[str, Any]:
    from meetingtasks.base.keys import get_keys
    from meetingtasks.base.priority import Priority
    from meetingtasks.store import get_redis, malformed

    bench_app = load(OURS)
    keys, redis = get_keys(), get_redis()
    queue_list = keys.queue(bench_app.queue, Priority.NORMAL)
    report = Progress(good)
    bench_app.send()  # a genuine message, taken back as the template of the bad ones
    template = redis.rpop(queue_list)
    every = max(1, good // bad)
    pushed = 0
    for i in range(good):
        bench_app.send()
        if i % every == every - 1 and pushed < bad:
            mutate = list(BAD_KINDS.values())[pushed % len(BAD_KINDS)]
            message = json.loads(template)  # each its own task (a copy of one that ended
            message["headers"]["id"] = str(uuid.uuid4())  # is dropped as a duplicate)
            message["properties"]["delivery_tag"] = str(uuid.uuid4())
            redis.lpush(queue_list, mutate(message))
            redis.lpush(keys.doorbell(bench_app.queue), 1)
            pushed += 1
    workers = [worker(bench_app, 2, Path(log_dir)) for _ in range(2)]
    started = time.monotonic()
    try:
        for service in workers:
            service.start()
        deadline = time.monotonic() + 600
        while True:
            done = len(bench_app.completion_times())
            report(done)
            if done >= good and malformed.count(keys) >= pushed:
                break
            if time.monotonic() > deadline or not all(s.alive() for s in workers):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - started
        alive = sum(service.alive() for service in workers)
    finally:
        for service in workers:
            service.stop()
    reasons: dict[str, int] = {}
    for entry in malformed.entries(keys, malformed.MALFORMED_KEPT):
        reason = entry.reason.split(" (")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "good_sent": good,
        "good_done": len(bench_app.completion_times()),
        "bad_pushed": pushed,
        "bad_set_aside": malformed.count(keys),
        "seconds": seconds,
        "workers_alive": alive,
        "workers": len(workers),
        "reasons": reasons,
    }
