"""Each measurement runs in a fresh child process: ``python -m bench.child NAME PARAMS OUT``.

Why a process per measurement: the apps read their settings once per process, a
Celery client accumulates state (result subscriptions, pools) that would slow the next
measurement, and the ``meetingtasks bench`` command has already imported our app with
the default Redis URL, which the benchmark must never touch.

The child reports progress as ``BENCH_PROGRESS done total`` lines on stderr and writes its
result (a JSON object) to the file OUT; anything else on stderr is kept for error reports.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import REPO_ROOT

PROGRESS = "BENCH_PROGRESS"

#: Measurement name -> "module:function"; the function takes the params as keywords.
MEASUREMENTS = {
    "publish": "bench.publish:measure",
    "prefill": "bench.workers:prefill",
    "drain": "bench.workers:drain",
    "latency": "bench.latency:measure",
    "gateway": "bench.gateway:measure",
    "ai_in_flight": "bench.ai:in_flight",
    "ai_model": "bench.ai:model",
    "ai_model_openai": "bench.ai:model_openai",
    "soak": "bench.soak:soak",
    "poison": "bench.poison:measure",
    "redis_cost": "bench.redis_cost:measure",
    "foreign": "bench.foreign:measure",
}


class ChildFailed(RuntimeError):
    pass


def child_env() -> dict[str, str]:
    """The environment of children and the workers they start: bench importable."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep + path if path else ''}"}


def run_child(
    name: str,
    params: dict[str, Any],
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Run one measurement in a child process and return its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        out_path = Path(out.name)
    command = [sys.executable, "-m", "bench.child", name, json.dumps(params), str(out_path)]
    tail: deque[str] = deque(maxlen=40)
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=child_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith(PROGRESS):
                _, done, total = line.split()
                on_progress(int(done), int(total))
            else:
                tail.append(line.rstrip())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        process.wait(timeout)
    except BaseException:
        process.terminate()  # the child's finally blocks stop the workers it started
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    finally:
        reader.join(5)
    try:
        result = json.loads(out_path.read_text()) if out_path.stat().st_size else None
    finally:
        out_path.unlink(missing_ok=True)
    if process.returncode != 0 or result is None:
        raise ChildFailed(f"{name} exited with code {process.returncode}:\n" + "\n".join(tail))
    return dict(result)


def progress(done: int, total: int) -> None:
    """Called by measurements in the child: moves the parent's progress bar."""
    print(f"{PROGRESS} {done} {total}", file=sys.stderr, flush=True)


class Progress:
    """Rate-limited progress reports (a few per second at most)."""

    def __init__(self, total: int, every: float = 0.25):
        self.total, self.every, self.last = total, every, 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if done >= self.total or now - self.last >= self.every:
            self.last = now
            progress(done, self.total)


def main(argv: list[str]) -> int:
    name, params, out = argv[0], json.loads(argv[1]), Path(argv[2])
    # SIGTERM from the parent (Ctrl-C, timeout) unwinds, so finally blocks stop workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    module, function = MEASUREMENTS[name].split(":")
    try:
        result = getattr(importlib.import_module(module), function)(**params)
    except Exception:
        traceback.print_exc()
        return 1
    plain = sys.modules.get("bench.plain_app")
    if plain is not None and plain.meetingtasks_modules():
        print(f"plain Celery was measured beside {plain.meetingtasks_modules()}", file=sys.stderr)
        return 1
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
