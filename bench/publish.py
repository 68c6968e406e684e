"""Publishes per second from one client process: plain ``delay()``, ours one at a time, batched.

Each kind runs in its own child process: a warm-up (connections, caches) that is not
timed, then ``repeat`` timed loops of ``n`` tasks; the median loop is the figure. With
``profile_path`` the timed loops run under cProfile and the profile is written there.

The batched figure uses ``TaskDispatcher().dispatch_batch`` as soon as
``meetingtasks.dispatch`` provides it (checked at run time); until then it measures
batches of ``send_task`` over one producer and says it is provisional.
"""

from __future__ import annotations

import cProfile
import functools
import importlib
import io
import pstats
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.apps import OURS, PLAIN, load
from bench.child import Progress

WARMUP = 200
KINDS = ("plain_delay", "delay", "dispatcher_single", "batch")


def dispatcher_api() -> tuple[Any | None, str]:
    """``meetingtasks.dispatch`` if it has TaskDispatcher.dispatch_batch and TaskRequest,
    else None and why."""
    try:
        module = importlib.import_module("meetingtasks.dispatch")
    except ModuleNotFoundError as exc:
        if exc.name == "meetingtasks.dispatch":
            return None, "TaskDispatcher (meetingtasks/dispatch.py) not built yet"
        return None, f"meetingtasks.dispatch failed to import: {exc}"
    except Exception as exc:
        return None, f"meetingtasks.dispatch failed to import: {type(exc).__name__}: {exc}"
    dispatcher = getattr(module, "TaskDispatcher", None)
    if dispatcher is None or not hasattr(module, "TaskRequest"):
        return None, "meetingtasks.dispatch has no TaskDispatcher/TaskRequest yet"
    if not hasattr(dispatcher, "dispatch_batch"):
        return None, "TaskDispatcher.dispatch_batch not built yet"
    return module, ""


def measure(
    kind: str, n: int, repeat: int, batch_size: int, profile_path: str | None = None
) -> dict[str, Any]:
    bench_app = load(PLAIN if kind == "plain_delay" else OURS)
    result: dict[str, Any] = {"status": "measured", "note": ""}
    if kind in ("plain_delay", "delay"):
        # plain: noop.delay(); ours: the no-op task's delay(), as a service would.
        send = bench_app.send
        loop = _loop_one_at_a_time(send)
    elif kind == "dispatcher_single":
        dispatch, why = dispatcher_api()
        if dispatch is None:
            return {"skipped": why}
        dispatcher = dispatch.TaskDispatcher()
        request = dispatch.TaskRequest(type=bench_app.noop, payload={})
        loop = _loop_one_at_a_time(lambda: dispatcher.dispatch(request))
    elif kind == "batch":
        dispatch, why = dispatcher_api()
        if dispatch is None:
            result.update(status="provisional", note=f"{why}: batches of send_task over one "
                          "producer instead of dispatch_batch")  # fmt: skip
            loop = _loop_producer_batches(bench_app, batch_size)
        else:
            result["note"] = f"TaskDispatcher().dispatch_batch, {batch_size} requests a call"
            loop = _loop_dispatch_batch(dispatch, bench_app.noop, batch_size, result)
    else:
        raise ValueError(f"unknown publish kind {kind!r}, one of {KINDS}")

    loop(min(WARMUP, n), lambda done: None)
    report = Progress(n * repeat)
    profiler = cProfile.Profile() if profile_path else None
    samples = []
    for round_ in range(repeat):
        prepare = getattr(loop, "prepare", None)
        if prepare is not None:  # inputs built before the clock starts
            prepare(n)
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        loop(n, functools.partial(_advance, report, round_ * n))
        elapsed = time.perf_counter() - start
        if profiler:
            profiler.disable()
        samples.append(n / elapsed)
    if profiler and profile_path:
        _write_profile(profiler, profile_path, f"{kind}: {repeat} x {n} tasks")
    expected = min(WARMUP, n) + n * repeat
    with bench_app.app.connection_for_write() as connection:
        queued = bench_app.queue_depth(connection)
    if queued != expected:
        result["note"] = (result["note"] + "; " if result["note"] else "") + (
            f"{queued} messages queued for {expected} sent"
        )
    return {
        **result,
        "rate": statistics.median(samples),
        "samples": [round(s, 1) for s in samples],
        "n": n,
        "repeat": repeat,
        "queued": queued,
        "profiled": bool(profiler),
    }


Loop = Callable[[int, Callable[[int], None]], None]


def _advance(report: Progress, offset: int, done: int) -> None:
    report(offset + done)


def _loop_one_at_a_time(send: Callable[[], Any]) -> Loop:
    def loop(n: int, report: Callable[[int], None]) -> None:
        for i in range(n):
            send()
            if not i % 256:
                report(i)
        report(n)

    return loop


def _loop_producer_batches(bench_app: Any, batch_size: int) -> Loop:
    """Batches of send_task sharing one producer (one connection, no pool round trip)."""
    app, name = bench_app.app, bench_app.noop

    def loop(n: int, report: Callable[[int], None]) -> None:
        done = 0
        while done < n:
            size = min(batch_size, n - done)
            with app.producer_or_acquire() as producer:
                for _ in range(size):
                    app.send_task(name, producer=producer)
            done += size
            report(done)

    return loop


def _loop_dispatch_batch(dispatch: Any, name: str, batch_size: int, result: dict) -> Loop:
    """dispatch_batch calls; the requests are built before the clock starts."""
    dispatcher = dispatch.TaskDispatcher()
    statuses: Counter[str] = Counter()
    result["response_statuses"] = statuses

    prepared: list[list[list[Any]]] = []  # the next timed loop's batches

    def build(n: int) -> list[list[Any]]:
        sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
        return [[dispatch.TaskRequest(type=name, payload={}) for _ in range(s)] for s in sizes]

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
