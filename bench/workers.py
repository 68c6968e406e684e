"""No-op tasks per second of real worker processes, steady state.

A run queues ``n`` no-op tasks (``prefill``, its own child process, so no client is
subscribed to their results while the worker runs), then ``drain`` starts the worker
and waits until every task has a result. The rate is counted from the first completion
to the last, read from the results' ``date_done`` the workers wrote: worker start-up is
left out, and the benchmark adds nothing to the worker's work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.apps import BenchApp, load
from bench.child import Progress, child_env
from bench.config import REPO_ROOT
from bench.stats import completion_rate

#: A worker that completes nothing for this long is stuck.
STALL_SECONDS = 120.0


@dataclass
class Service:
    """A long-running process the benchmark starts (a worker, the gateway, an AI node), in its
    own session so it can be stopped with everything it forked."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env={**child_env(), **self.env}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
        """Until ``condition()`` holds; RuntimeError with the log's tail if the process
        exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a worker's warm shutdown), then SIGKILL of its whole process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def worker(
    bench_app: BenchApp,
    concurrency: int | None,
    log_dir: Path,
    queues: list[str] | tuple[str, ...] | None = None,
    env: dict[str, str] | None = None,
) -> Service:
    """``celery -A <app> worker``, prefork with ``concurrency`` processes, or with None no
    pool flags at all (the queue's own pool from routes/), not started yet."""
    queues = queues or bench_app.worker_queues
    name = f"bench-{bench_app.kind}-c{concurrency or 'default'}"
    flags = ["-c", str(concurrency), "-P", "prefork"] if concurrency else []
    argv = [
        sys.executable, "-m", "celery", "-A", bench_app.module, "worker",
        *(["-Q", ",".join(queues)] if queues else []),
        *flags, "-n", f"{name}@%h", *bench_app.worker_args,
    ]  # fmt: skip
    return Service(name, argv, log_dir, env or {})


def prefill(app: str, n: int, task: str = "noop") -> dict[str, Any]:
    """Queue ``n`` tasks (no-op, or ``wait``) over one producer; returns how many are
    queued."""
    bench_app = load(app, task)
    report = Progress(n)
    with bench_app.app.producer_or_acquire() as producer:
        for i in range(n):
            bench_app.app.send_task(bench_app.noop, producer=producer)
            if not i % 256:
                report(i)
    report(n)
    with bench_app.app.connection_for_write() as connection:
        return {"queued": bench_app.queue_depth(connection)}


def drain(
    app: str, concurrency: int | None, n: int, log_dir: str, task: str = "noop"
) -> dict[str, Any]:
    """Start the worker on the queued tasks and time it from first to last completion
    (``concurrency`` None: the worker's own choice, no pool flags)."""
    bench_app = load(app, task)
    report = Progress(n)
    started = time.time()
    with (
        worker(bench_app, concurrency, Path(log_dir)) as running,
        bench_app.app.connection_for_write() as connection,
    ):
        last_depth, last_change = n, time.monotonic()
        while True:
            if not running.alive():
                raise RuntimeError(f"worker exited:\n{running.log_tail()}")
            depth = bench_app.queue_depth(connection)
            if depth != last_depth:
                last_depth, last_change = depth, time.monotonic()
            report(n - depth)
            if depth == 0:
                break
            if time.monotonic() - last_change > STALL_SECONDS:
                raise RuntimeError(f"worker stalled at {depth} queued:\n{running.log_tail()}")
            time.sleep(0.5)
        done = _wait_for_results(bench_app, n, running)
    times = sorted(done)
    rate = completion_rate(times)
    return {
        "rate": rate["rate"],
        "rate_middle_90": rate["rate_middle_90"],
        "seconds": rate["seconds"],
        "completed": len(times),
        "concurrency": concurrency,
        "per_process": rate["rate"] / concurrency if concurrency else None,
        "startup_seconds": times[0] - started,
        "wall_seconds": times[-1] - started,
    }


def _wait_for_results(bench_app: BenchApp, n: int, running: Service) -> list[float]:
    """Completion times (unix seconds) of every task, once all ``n`` succeeded."""
    deadline = time.monotonic() + 60
    while True:
        done = bench_app.completion_times()
        if len(done) >= n:
            return done
        if time.monotonic() > deadline or not running.alive():
            raise RuntimeError(f"only {len(done)} of {n} tasks succeeded:\n{running.log_tail()}")
        time.sleep(0.5)
