"""A real Redis Sentinel topology on loopback: a primary, a replica and three sentinels,
all ``redis-server`` processes of this test, to kill, promote and restart.

The sentinels judge a server down after ``DOWN_AFTER_MS`` (2 s) and fail over at once,
as a production deployment tuned for fast failover would. With 1 s, on a loaded
two-core machine, all three sentinels sometimes judged a primary promoted a second
earlier down while it answered, and failed over again (``failovers()`` counts them).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from meetingtasks.run.embedded_redis import free_port

MASTER = "mymaster"
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 5000


class SentinelTopology:
    def __init__(self, directory: Path, replicas: int = 1, sentinels: int = 3) -> None:
        self.directory = directory
        self.binary = shutil.which("redis-server") or "redis-server"
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}
        first = self._start_server(free_port())
        for _ in range(replicas):
            self._start_server(free_port(), replica_of=first)
        for _ in range(sentinels):
            self._start_sentinel(free_port(), first)
        self.wait_for(lambda: self.primary_port() == first and self._replicas_known(replicas))

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinels)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers says it."""
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                address = self.client(port).sentinel_get_master_addr_by_name(MASTER)
                if address:
                    return int(address[1])
        return None

    def failovers(self) -> int:
        """Failovers since the start, as the sentinels count them (the config epoch)."""
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                return int(self.client(port).sentinel_master(MASTER)["config-epoch"])
        raise TimeoutError("no sentinel answers")

    def kill_primary(self) -> int:
        """SIGKILL the primary; returns its port."""
        port = self.primary_port()
        assert port is not None, "no primary to kill"
        process = self.servers.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return port

    def kill_replicas(self) -> None:
        """SIGKILL every server but the primary."""
        primary = self.primary_port()
        for port in [port for port in self.servers if port != primary]:
            process = self.servers.pop(port)
            process.send_signal(signal.SIGKILL)
            process.wait()

    def wait_for_promotion(self, old_port: int, timeout: float = 30.0) -> float:
        """Wait until every sentinel names the same other primary; the monotonic time."""

        def promoted() -> bool:
            named = {self._named_by(port) for port in self.sentinels}
            return len(named) == 1 and named.pop() not in (None, old_port)

        self.wait_for(promoted, timeout)
        return time.monotonic()

    def _named_by(self, sentinel: int) -> int | None:
        with contextlib.suppress(redis.RedisError):
            address = self.client(sentinel).sentinel_get_master_addr_by_name(MASTER)
            return int(address[1]) if address else None
        return None

    def restart_as_replica(self, port: int) -> None:
        """Start a killed server again, as a replica of the current primary."""
        primary = self.primary_port()
        assert primary is not None
        self._start_server(port, replica_of=primary)

    def stop(self) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait()
        self.servers.clear()
        self.sentinels.clear()

    def wait_for(self, condition: object, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise TimeoutError(f"the Sentinel topology did not settle in {timeout}s")

    def _replicas_known(self, count: int) -> bool:
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                if len(self.client(port).sentinel_slaves(MASTER)) < count:
                    return False
        return True

    def _start_server(self, port: int, replica_of: int | None = None) -> int:
        home = self.directory / f"redis-{port}"  # its own: a replica writes its copy there
        home.mkdir(exist_ok=True)
        args = [
            self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(home),
            # a replica that joins gets its copy at once (Redis waits 5 s for others)
            "--repl-diskless-sync-delay", "0",
            "--logfile", str(self.directory / f"redis-{port}.log"),
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self.wait_for(lambda: self._answers(port), 10)
        if replica_of is not None:
            self.wait_for(lambda: self._in_sync(port), 30)
        return port

    def _in_sync(self, port: int) -> bool:
        """A replica whose link to its primary is up (its first sync is done)."""
        with contextlib.suppress(redis.RedisError):
            return self.client(port).info("replication").get("master_link_status") == "up"
        return False

    def _start_sentinel(self, port: int, primary: int) -> None:
        config = self.directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"logfile {self.directory / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.sentinels[port] = subprocess.Popen(
            [self.binary, str(config), "--sentinel"], stdin=subprocess.DEVNULL
        )
        self.wait_for(lambda: self._answers(port), 10)

    def _answers(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError):
            return bool(self.client(port).ping())
        return False
