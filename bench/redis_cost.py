"""What one task costs Redis, read from Redis's own accounting: send, then run.

On a fresh private Redis each (the orchestrator starts it, no AOF, ``url``): ``n`` tasks
of a user's own module sent one at a time with ``delay()``, then drained by one ``-c 2``
worker started for them. Redis's ``INFO`` before and after each phase gives its CPU
(``used_cpu_user`` + ``used_cpu_sys``: every command, every read and write of a socket)
and the commands it ran (``total_commands_processed``, and ``commandstats`` by name), per
task. The worker's CPU (main process and pool) comes from /proc, start-up included and
from the first poll that sees it taking tasks (a few already ran by then: a little low
at most).

Redis runs commands on one core, so its CPU per task sets the ceiling of a whole
deployment on one Redis: ``1e6 / µs`` tasks per second per Redis core. The polling that
tells the run is over (two commands, five times a second) is left out of the counts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import redis

from bench.child import Progress
from bench.workers import worker

#: Commands the polls of the drain send (the queue's lists, what workers hold).
POLL_COMMANDS = ("llen", "hlen", "zrange")


def measure(
    app: str, kept: bool, n: int, url: str, log_dir: str, traced: bool = False
) -> dict[str, Any]:
    """``traced``: ours with OpenTelemetry on, in the sender and the worker (spans to a
    file, so the exporter's own network costs nothing)."""
    os.environ["BENCH_REDIS_URL"] = url
    os.environ["MEETINGTASKS_REDIS_URL"] = url
    if traced:
        os.environ["MEETINGTASKS_TRACE_EXPORTER"] = "file"
        os.environ["MEETINGTASKS_TRACE_FILE"] = str(Path(log_dir) / f"spans-{os.getpid()}.jsonl")
    from bench.apps import OURS, load

    bench_app = load(app, "cost_kept" if kept else "cost_ignored")
    if traced:
        from meetingtasks.base import tracing

        tracing.setup("bench-sender")
    client = redis.Redis.from_url(url)
    report = Progress(2 * n)
    before = _usage(client)
    sender_cpu = time.process_time()
    for i in range(n):
        bench_app.send()
        if not i % 256:
            report(i)
    sender_cpu = time.process_time() - sender_cpu
    sent = _usage(client)
    # Our keys' namespace as the settings read it (this may be plain Celery's process).
    prefix = os.environ.get("MEETINGTASKS_NAMESPACE", "mt") + ":" if app == OURS else ""
    lists = [f"{prefix}{bench_app.queue}{suffix}" for suffix in _list_suffixes(app)]
    poll_commands = 0
    service = worker(bench_app, 2, Path(log_dir))
    started = time.monotonic()
    with service:
        ready_cpu = None
        deadline = time.monotonic() + 900
        while True:
            time.sleep(0.2)
            pipe = client.pipeline(transaction=False)
            for key in lists:
                pipe.llen(key)
            for key in _holding(client, app, prefix, bench_app.queue):
                pipe.hlen(key)
            poll_commands += len(pipe.command_stack) + (app == OURS)
            waiting = sum(pipe.execute())
            if ready_cpu is None and waiting < n:  # it started taking them
                ready_cpu = _tree_cpu_seconds(service)
            report(2 * n - waiting)
            if not waiting:
                break
            if time.monotonic() > deadline or not service.alive():
                raise RuntimeError(f"{waiting} tasks left:\n{service.log_tail()}")
        time.sleep(0.5)  # the last flush of acknowledgements and events
        worker_cpu = _tree_cpu_seconds(service)
        ran = _usage(client)
    seconds = time.monotonic() - started
    if kept and len(bench_app.completion_times()) < n:  # read after the counts were taken
        raise RuntimeError(f"only {len(bench_app.completion_times())} of {n} results kept")
    send = _delta(before, sent, n, 0)
    run = _delta(sent, ran, n, poll_commands, polling=POLL_COMMANDS)
    total_us = send["cpu_us"] + run["cpu_us"]
    return {
        "send": send,
        "run": run,
        "cpu_us": total_us,
        "commands": send["commands"] + run["commands"],
        "ceiling": 1e6 / total_us if total_us else None,
        "worker_cpu_us": 1e6 * worker_cpu / n,
        "sender_cpu_us": 1e6 * sender_cpu / n,
        "worker_cpu_steady_us": 1e6 * (worker_cpu - (ready_cpu or 0.0)) / n,
        "drain_seconds": seconds,
        "n": n,
    }


def _holding(client: redis.Redis, app: str, prefix: str, queue: str) -> list[str]:
    """Where workers hold messages: kombu's unacknowledged hash; ours, each consumer's
    held hash (``Keys.held``), the consumers read from the roster."""
    if app != "ours":
        return [f"{prefix}unacked"]
    consumers = [c.decode() for c in client.zrange(f"{prefix}consumers", 0, -1)]
    return [f"{prefix}held:{queue}:{consumer}" for consumer in consumers]


def _list_suffixes(app: str) -> list[str]:
    """The priority lists of a queue: kombu's (plain Celery's default steps and separator),
    ours (``base/keys.py``)."""
    if app == "plain":
        return ["", *(f"\x06\x16{step}" for step in (3, 6, 9))]
    return ["", *(f":{step}" for step in (3, 6, 9))]


def _usage(client: redis.Redis) -> dict[str, Any]:
    info = client.info("all")
    stats = {
        name.removeprefix("cmdstat_"): value
        for name, value in info.items()
        if name.startswith("cmdstat_")
    }
    return {
        "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "commands": int(info["total_commands_processed"]),
        "commandstats": stats,
    }


def _delta(
    a: dict[str, Any], b: dict[str, Any], n: int, extra: int, polling: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Per task from ``a`` to ``b``; ``extra`` commands (and the polling ones' time)
    are the benchmark's own and left out. The two INFO calls are left out too."""
    by_command: dict[str, dict[str, float]] = {}
    for name, stats in b["commandstats"].items():
        calls = stats["calls"] - a["commandstats"].get(name, {}).get("calls", 0)
        usec = stats["usec"] - a["commandstats"].get(name, {}).get("usec", 0)
        if name in polling or name == "info":
            continue
        if calls:
            by_command[name] = {"calls": round(calls / n, 2), "usec": round(usec / n, 2)}
    poll_usec = sum(
        b["commandstats"].get(name, {}).get("usec", 0)
        - a["commandstats"].get(name, {}).get("usec", 0)
        for name in polling
    )
    commands = b["commands"] - a["commands"] - extra - 1
    return {
        "cpu_us": 1e6 * (b["cpu"] - a["cpu"]) / n - poll_usec / n,
        "commands": commands / n,
        "by_command": by_command,
    }


def _tree_cpu_seconds(service: Any) -> float:
    """CPU seconds of a running worker: its main process, its live pool processes, and
    the pool processes that already exited (the main process's children's time)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = service.process.pid

    def times(pid: int) -> list[int]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return [int(value) for value in fields[11:15]]  # utime stime cutime cstime

    total = sum(times(main))
    children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    for child in children:
        utime, stime, _, _ = times(int(child))
        total += utime + stime
    return total / tick
