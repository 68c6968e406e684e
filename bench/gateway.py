"""WebSocket figures through ``meetingtasks gateway``.

One child process starts the parts on the private Redis: a reference AI node
(``meetingtasks ai-node``), our worker for the ``default`` and ``ai`` queues (two
processes) and one gateway process; then, as a WebSocket client (the ``websockets``
library, asyncio, one process):

- e2e: no-op submits at a stated rate over a few sessions, submit -> result frame;
- llm: short prompts one after the other, submit -> first ``delta`` frame, and -> result;
- idle: N connections held open on the gateway, its RSS growth per connection (/proc),
  answered by a ping on each;
- broadcast: every connection subscribes to one meeting channel, an event is published
  on the EventBus, and the time until each client has it is recorded.

The client is one asyncio process on the same two cores: its own reading time is part
of every figure here (notably broadcast to thousands of connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import frames
from bench.child import Progress, child_env, progress
from bench.stats import summary_ms
from bench.workers import Service, worker

USER = "bench-user"
MEETING = "benchm1"
#: The EventBus channel of the meeting, which clients subscribe to by the same name.
CHANNEL = f"meeting.{MEETING}"
#: Client task names (routes/ `client = ...`): clients submit by these, not by type.
#: ``echo`` is system.echo, the near no-op that routes/ exposes to clients.
E2E_TYPE = "echo"
LLM_TYPE = "llm_chat"
PROMPT = "Say hello to the meeting in five words."
#: Submits per second per WebSocket session in the e2e run (stays under per-session limits).
SESSION_RATE = 20.0
#: Concurrent WebSocket handshakes while opening the idle connections.
OPEN_CONCURRENCY = 64


def meetingtasks(*args: str) -> list[str]:
    return [sys.executable, "-m", "meetingtasks", *args]


def mint_token(user: str, meeting: str) -> str:
    """A client token from ``meetingtasks token``, with whichever user and meeting options
    its --help shows (JSON output when it offers ``--json``)."""
    env = {**child_env(), "COLUMNS": "4096"}  # rich must not fold a long token
    help_text = subprocess.run(
        meetingtasks("token", "--help"), capture_output=True, text=True, env=env, timeout=60
    ).stdout

    def offered(option: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None

    args: list[str] = []
    for options, value in ((("--user-id", "--user"), user), (("--meeting", "--meetings"), meeting)):
        option = next((o for o in options if offered(o)), None)
        if option:
            args += [option, value]
    if offered("--json"):
        args.append("--json")
    done = subprocess.run(
        meetingtasks("token", *args), capture_output=True, text=True, env=env, timeout=60
    )
    out = done.stdout.strip()
    frame = frames.decode(out)
    token = (frame or {}).get("token") or (out.split()[-1] if out and frame is None else "")
    if done.returncode != 0 or not token:
        raise RuntimeError(
            f"could not mint a token with `meetingtasks token {' '.join(args)}` "
            f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return str(token)


def measure(
    rate: float,
    duration: float,
    connections: int,
    llm_samples: int,
    broadcast_rounds: int,
    log_dir: str,
) -> dict[str, Any]:
    from bench.apps import OURS, load
    from meetingtasks.run.embedded_redis import free_port

    _raise_open_files_limit()
    bench_app = load(OURS)
    port, node = free_port(), f"tcp://127.0.0.1:{free_port()}"
    env = {"MEETINGTASKS_LLM_NODES": node}
    logs = Path(log_dir)
    gateway = Service(
        "gateway", meetingtasks("gateway", "--host", "127.0.0.1", "--port", str(port)), logs, env
    )
    services = [
        Service("ai-node", meetingtasks("ai-node", "--bind", node), logs, env),
        worker(bench_app, 2, logs, queues=["default", "ai"], env=env),
        gateway,
    ]
    with contextlib.ExitStack() as stack:
        for service in services:
            stack.enter_context(service)
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway)
        url = f"ws://127.0.0.1:{port}/ws?token={quote(mint_token(USER, MEETING))}"
        redis_client = bench_app.app.backend.client
        result = asyncio.run(
            _measure_all(
                url, gateway, redis_client, rate, duration, connections, llm_samples,
                broadcast_rounds,
            )
        )  # fmt: skip
    return result


async def _measure_all(
    url: str,
    gateway: Service,
    redis_client: Any,
    rate: float,
    duration: float,
    connections: int,
    llm_samples: int,
    broadcast_rounds: int,
) -> dict[str, Any]:
    """Each part on its own: one that fails reports its error, the others still run."""
    parts: dict[str, Any] = {}

    async def part(name: str, run: Callable[[], Any]) -> None:
        try:
            parts[name] = await run()
        except Exception as exc:
            parts[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            if not gateway.alive():
                parts[name]["error"] += f"\ngateway exited:\n{gateway.log_tail()}"

    await part("warmup", lambda: _warm_up(url))
    if "error" in parts["warmup"]:
        return {name: parts["warmup"] for name in ("e2e", "llm", "idle", "broadcast")}
    await part("e2e", lambda: _e2e(url, rate, duration))
    await part("llm", lambda: _llm(url, llm_samples))
    await part(
        "idle",
        lambda: _idle_and_broadcast(url, gateway, redis_client, connections, broadcast_rounds),
    )
    parts["broadcast"] = parts["idle"].pop("broadcast", parts["idle"])
    return parts


# -- the WebSocket layer ------------------------------------------------------------------


async def _connect(url: str) -> Any:
    try:
        from websockets.asyncio.client import connect
    except ImportError:  # websockets < 13
        from websockets import connect  # type: ignore[no-redef,unused-ignore]
    # No keepalive pings from the client: idle means idle.
    return await connect(url, open_timeout=30, close_timeout=2, ping_interval=None)


async def _read(connection: Any, on_frame: Callable[[dict[str, Any], float], Any]) -> None:
    """Hand every frame to ``on_frame`` with its arrival time, until the connection closes."""
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        async for message in connection:
            frame = frames.decode(message)
            if frame is not None:
                on_frame(frame, time.monotonic())


class _Session:
    """Connections sharing one RequestTracker, each with its reader task."""

    def __init__(self) -> None:
        self.tracker = frames.RequestTracker()
        self.connections: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.count = 0

    async def open(self, url: str, n: int = 1) -> None:
        for _ in range(n):
            connection = await _connect(url)
            self.connections.append(connection)
            self.readers.append(asyncio.create_task(_read(connection, self.tracker.on_frame)))

    async def submit(self, task_type: str, data: dict[str, Any], on: int = 0) -> str:
        self.count += 1
        request_id = f"bench-{self.count}"
        self.tracker.on_send(request_id, time.monotonic())
        await self.connections[on % len(self.connections)].send(
            frames.submit(request_id, task_type, data)
        )
        return request_id

    async def wait(self, request_ids: Iterable[str], timeout: float) -> None:
        deadline, pending = time.monotonic() + timeout, set(request_ids)
        while not pending <= self.tracker.finished.keys():
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()


async def _warm_up(url: str) -> dict[str, Any]:
    """A few no-op round trips, which also wait for the worker to consume."""
    session = _Session()
    await session.open(url)
    try:
        ids = [await session.submit(E2E_TYPE, {}) for _ in range(5)]
        await session.wait(ids, timeout=120)
        outcomes = session.tracker.outcomes()
        if outcomes.get("completed") != len(ids):
            raise RuntimeError(f"warm-up submits of {E2E_TYPE} did not complete: {outcomes}")
        return {"outcomes": outcomes}
    finally:
        await session.close()


async def _e2e(url: str, rate: float, duration: float) -> dict[str, Any]:
    sessions = max(1, math.ceil(rate / SESSION_RATE))
    total = max(1, int(rate * duration))
    report = Progress(total)
    session = _Session()
    await session.open(url, sessions)
    try:
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await session.submit(E2E_TYPE, {}, on=i)
            report(i + 1)
        achieved = total / max(time.monotonic() - start, 1e-9)
        await session.wait(session.tracker.sent.keys(), timeout=30)
    finally:
        await session.close()
    tracker = session.tracker
    return {
        **summary_ms(tracker.latencies(tracker.finished)),
        "accepted": summary_ms(tracker.latencies(tracker.accepted, status=None)),
        "sent": total,
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "sessions": sessions,
        "outcomes": tracker.outcomes(),
        "other_frames": dict(tracker.other),
    }


async def _llm(url: str, samples: int) -> dict[str, Any]:
    session = _Session()
    await session.open(url)
    try:
        for i in range(samples):
            request_id = await session.submit(LLM_TYPE, {"prompt": PROMPT})
            await session.wait([request_id], timeout=60)
            progress(i + 1, samples)
    finally:
        await session.close()
    tracker = session.tracker
    return {
        "first_delta": summary_ms(tracker.latencies(tracker.first_delta)),
        "reply": summary_ms(tracker.latencies(tracker.finished)),
        "deltas_per_reply": round(sum(tracker.deltas.values()) / max(1, len(tracker.deltas)), 1),
        "prompt": PROMPT,
        "outcomes": tracker.outcomes(),
        "other_frames": dict(tracker.other),
    }


async def _idle_and_broadcast(
    url: str, gateway: Service, redis_client: Any, n: int, rounds: int
) -> dict[str, Any]:
    assert gateway.process is not None
    pid = gateway.process.pid
    arrivals: defaultdict[int, list[float]] = defaultdict(list)
    replies: Counter[str] = Counter()

    def on_frame(frame: dict[str, Any], now: float) -> None:
        op = frame.get("op")
        if op == "event":
            seq = frames.find_value(frame, "bench_seq")
            if isinstance(seq, int):
                arrivals[seq].append(now)
        else:
            replies[f"{op}:{frame.get('code')}" if op == "error" else str(op)] += 1

    rss_before, redis_before = _tree_rss(pid), _redis_memory(redis_client)
    connections, failures = await _open_many(url, n)
    readers = [asyncio.create_task(_read(c, on_frame)) for c in connections]
    try:
        await asyncio.sleep(2)  # let the gateway settle before reading its memory
        rss_after, redis_after = _tree_rss(pid), _redis_memory(redis_client)
        await asyncio.gather(*(c.send(frames.ping()) for c in connections), return_exceptions=True)
        deadline = time.monotonic() + 10 + n / 1000
        while replies["pong"] < len(connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        held = replies["pong"]
        opened = max(1, len(connections))
        idle = {
            "requested": n,
            "opened": len(connections),
            "held": held,
            "open_failures": dict(failures),
            "kb_per_connection": (rss_after - rss_before) / 1024 / opened,
            "gateway_rss_mb": {"before": rss_before / 2**20, "after": rss_after / 2**20},
            "redis_bytes_per_connection": (redis_after - redis_before) / opened,
        }
        try:
            idle["broadcast"] = await _broadcast(connections, arrivals, replies, held, rounds)
        except Exception as exc:
            idle["broadcast"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        return idle
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        for reader in readers:
            reader.cancel()


async def _broadcast(
    connections: list[Any],
    arrivals: defaultdict[int, list[float]],
    replies: Counter[str],
    held: int,
    rounds: int,
) -> dict[str, Any]:
    """Everyone subscribes to the meeting channel, then ``rounds`` events are published."""
    from meetingtasks.events import Event, EventBus

    await asyncio.gather(
        *(c.send(frames.subscribe(CHANNEL)) for c in connections), return_exceptions=True
    )
    await asyncio.sleep(1 + len(connections) / 5000)
    bus = EventBus()
    latencies: list[float] = []
    reach_all: list[float] = []
    for seq in range(rounds):
        sent = time.monotonic()
        bus.publish(CHANNEL, Event("meeting.user_joined", {"bench_seq": seq}, "bench",
                                   meeting_id=MEETING))  # fmt: skip
        deadline = sent + 10
        while len(arrivals[seq]) < held and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        latencies += [t - sent for t in arrivals[seq]]
        if len(arrivals[seq]) >= held:
            reach_all.append(max(arrivals[seq]) - sent)
        progress(seq + 1, rounds)
        await asyncio.sleep(0.2)
    return {
        **summary_ms(latencies),
        "subscribers": held,
        "rounds": rounds,
        "delivered": len(latencies),
        "expected": held * rounds,
        "reach_all": summary_ms(reach_all),
        "replies": dict(replies),
    }


async def _open_many(url: str, n: int) -> tuple[list[Any], Counter[str]]:
    connections: list[Any] = []
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    report = Progress(n)

    async def one() -> None:
        async with gate:
            try:
                connections.append(await _connect(url))
            except Exception as exc:
                failures[f"{type(exc).__name__}: {exc}"[:200]] += 1
            report(len(connections) + sum(failures.values()))

    await asyncio.gather(*(one() for _ in range(n)))
    return connections, failures


# -- processes ------------------------------------------------------------------------------


def _wait_healthy(url: str, gateway: Service, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not gateway.alive():
            raise RuntimeError(f"gateway exited:\n{gateway.log_tail()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"gateway not healthy at {url} in {timeout}s:\n{gateway.log_tail()}")


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(p) for p in (task / "children").read_text().split()]
    return total


def _redis_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _raise_open_files_limit() -> None:
    """Thousands of client sockets need as many descriptors as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
