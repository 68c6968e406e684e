"""Publishes per second from one client process: plain ``delay()``, ours one at a time, batched.

One timed loop of ``n`` tasks per child process, after a warm-up (connections, caches)
that is not timed. The orchestrator runs the kinds in turn, round after round
(``run.py``), so plain Celery and ours are measured side by side at the same moments:
this machine's speed drifts by a fifth within minutes, and a ratio of figures taken
minutes apart would measure the drift. With ``profile_path`` the loop runs under
cProfile and the profile is written there.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.apps import OURS, PLAIN, load
from bench.child import Progress

WARMUP = 200
KINDS = ("plain_delay", "delay", "dispatcher_single", "batch")

Loop = Callable[[int, Callable[[int], None]], None]


def measure(kind: str, n: int, batch_size: int, profile_path: str | None = None) -> dict[str, Any]:
    bench_app = load(PLAIN if kind == "plain_delay" else OURS)
    result: dict[str, Any] = {}
    if kind in ("plain_delay", "delay"):
        # plain: noop.delay(); ours: the no-op task's delay(), as a service would.
        loop = _loop_one_at_a_time(bench_app.send)
    elif kind == "dispatcher_single":
        from meetingtasks.dispatch import TaskDispatcher, TaskRequest

        dispatcher, request = TaskDispatcher(), TaskRequest(type=bench_app.noop, payload={})
        loop = _loop_one_at_a_time(lambda: dispatcher.dispatch(request))
    elif kind == "batch":
        result["note"] = f"TaskDispatcher().dispatch_batch, {batch_size} requests a call"
        loop = _loop_dispatch_batch(bench_app.noop, batch_size, result)
    else:
        raise ValueError(f"unknown publish kind {kind!r}, one of {KINDS}")

    loop(min(WARMUP, n), lambda done: None)
    report = Progress(n)
    prepare = getattr(loop, "prepare", None)
    if prepare is not None:  # inputs built before the clock starts
        prepare(n)
    profiler = cProfile.Profile() if profile_path else None
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    loop(n, report)
    elapsed = time.perf_counter() - start
    if profiler and profile_path:
        profiler.disable()
        _write_profile(profiler, profile_path, f"{kind}: {n} tasks")
    with bench_app.app.connection_for_write() as connection:
        queued = bench_app.queue_depth(connection)
    expected = min(WARMUP, n) + n
    if queued != expected:
        result["note"] = f"{queued} messages queued for {expected} sent"
    return {**result, "rate": n / elapsed, "n": n, "queued": queued, "profiled": bool(profiler)}


def _loop_one_at_a_time(send: Callable[[], Any]) -> Loop:
    def loop(n: int, report: Callable[[int], None]) -> None:
        for i in range(n):
            send()
            if not i % 256:
                report(i)
        report(n)

    return loop


def _loop_dispatch_batch(name: str, batch_size: int, result: dict) -> Loop:
    """dispatch_batch calls; the requests are built before the clock starts."""
    from meetingtasks.dispatch import TaskDispatcher, TaskRequest

    dispatcher = TaskDispatcher()
    statuses: Counter[str] = Counter()
    result["response_statuses"] = statuses

    prepared: list[list[list[Any]]] = []  # the next timed loop's batches

    def build(n: int) -> list[list[Any]]:
        sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
        return [[TaskRequest(type=name, payload={}) for _ in range(s)] for s in sizes]

    def prepare(n: int) -> None:
        prepared.append(build(n))

    def loop(n: int, report: Callable[[int], None]) -> None:
        batches, done = prepared.pop() if prepared else build(n), 0
        for batch in batches:
            responses = dispatcher.dispatch_batch(batch)
            statuses.update(str(getattr(r, "status", r)) for r in responses)
            done += len(batch)
            report(done)

    loop.prepare = prepare  # type: ignore[attr-defined]
    return loop


def _write_profile(profiler: cProfile.Profile, path: str, title: str) -> None:
    out = io.StringIO()
    out.write(f"# cProfile of {title} (timings inflated by the profiler)\n\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs()
    out.write("## by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(60)
    out.write("\n## by own time\n")
    stats.sort_stats("tottime").print_stats(40)
    with open(path, "w") as f:
        f.write(out.getvalue())
