"""Real Celery worker processes for tests: started, stopped, and killed with -9."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count(1)


@dataclass
class WorkerProcess:
    """``celery -A meetingtasks worker`` in its own process group, logging to a file."""

    queues: list[str]
    log_dir: Path
    concurrency: int = 1
    pool: str = "prefork"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"w{os.getpid()}-{next(_names)}@test")
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name.split('@')[0]}.log"

    def start(self, wait: bool = True, timeout: float = 60.0) -> WorkerProcess:
        command = [
            sys.executable, "-m", "celery", "-A", "meetingtasks", "worker",
            "-Q", ",".join(self.queues),
            "-c", str(self.concurrency),
            "-P", self.pool,
            "-n", self.name,
            "-I", "tests.worker_tasks",
            "-l", "INFO",
            "--without-gossip", "--without-mingle",
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker consumes (it logs 'ready.' once its queues are bound)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} not ready in {timeout}s:\n{self.log()}")

    def rss_bytes(self) -> int:
        """Resident memory of the worker: its main process and its pool processes."""
        assert self.process is not None
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> None:
        """Warm shutdown (SIGTERM): running tasks finish, then the worker exits."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self.process = None

    def kill(self) -> None:
        """kill -9 of the main process and its pool children, as a crash would."""
        if self.process:
            self._reap_group()
            self.process.wait()
        self.process = None

    def _reap_group(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
