"""WebSocket figures through ``meetingtasks gateway``.

One child process starts the parts on the private Redis: a reference AI node
(``meetingtasks ai-node``), our worker for the ``default`` and ``ai`` queues (two
processes) and one gateway process; then, as a WebSocket client (the ``websockets``
library, asyncio, one process):

- e2e: no-op submits at a stated rate over a few sessions, submit -> result frame;
- llm: short prompts one after the other, submit -> first ``delta`` frame, and -> result;
- idle and broadcast, at N clients, N/10 and 2N: the connections are held by
  ``CLIENT_PROCESSES`` processes of ``bench.ws_clients``, each subscribed to one
  meeting channel; the gateway's RSS growth per connection (/proc); then events
  published on the EventBus and the time until each client has each (one monotonic
  clock for all processes); at N, again with 1% of the clients not reading.

The clients run on the same two cores as the gateway: their reading time is part of
the broadcast figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import frames
from bench.child import Progress, child_env, progress
from bench.stats import percentile, summary_ms
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
#: Processes of ``bench.ws_clients`` holding the idle connections between them.
CLIENT_PROCESSES = 4
#: Clients that stop reading in the slow-consumer broadcast.
SLOW_FRACTION = 0.01
#: The gateway's per-user and per-address limits, raised: every bench client is one user.
GATEWAY_LIMITS = {
    f"MEETINGTASKS_GATEWAY_{name}": "100000"
    for name in ("MAX_CONNECTIONS_PER_USER", "MAX_CONNECTIONS_PER_ADDRESS",
                 "MAX_SESSIONS_PER_USER")
}  # fmt: skip


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
    env = {"MEETINGTASKS_LLM_NODES": node, **GATEWAY_LIMITS}
    logs = Path(log_dir)
    gateway = Service(
        "gateway", meetingtasks("gateway", "--host", "127.0.0.1", "--port", str(port)), logs, env
    )
    port2 = free_port()
    argv2 = meetingtasks("gateway", "--host", "127.0.0.1", "--port", str(port2), "--workers", "2")
    gateway2 = Service("gateway-workers2", argv2, logs, env)
    services = [
        Service("ai-node", meetingtasks("ai-node", "--bind", node), logs, env),
        worker(bench_app, 2, logs, queues=["default", "ai"], env=env),
        gateway,
        gateway2,
    ]
    with contextlib.ExitStack() as stack:
        for service in services:
            stack.enter_context(service)
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway)
        _wait_healthy(f"http://127.0.0.1:{port2}/healthz", gateway2)
        token = quote(mint_token(USER, MEETING))
        url = f"ws://127.0.0.1:{port}/ws?token={token}"
        redis_client = bench_app.app.backend.client
        result = asyncio.run(
            _measure_all(
                url, gateway, redis_client, rate, duration, connections, llm_samples,
                broadcast_rounds,
            )
        )  # fmt: skip
        url2 = f"ws://127.0.0.1:{port2}/ws?token={token}"
        try:
            result["workers2"] = asyncio.run(_idle_and_broadcast(
                url2, gateway2, redis_client, connections, broadcast_rounds, ("main", "large")
            ))  # fmt: skip
        except Exception as exc:
            result["workers2"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
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
        return {name: parts["warmup"] for name in ("e2e", "llm", "idle")}
    await part("e2e", lambda: _e2e(url, rate, duration))
    await part("llm", lambda: _llm(url, llm_samples))
    await part(
        "idle",
        lambda: _idle_and_broadcast(url, gateway, redis_client, connections, broadcast_rounds),
    )
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


class _ClientProcesses:
    """``CLIENT_PROCESSES`` processes of ``bench.ws_clients``, ``n`` connections in all."""

    def __init__(self, url: str, n: int) -> None:
        self.counts = [n // CLIENT_PROCESSES + (i < n % CLIENT_PROCESSES)
                       for i in range(CLIENT_PROCESSES)]  # fmt: skip
        self.processes = [self._start(url, count) for count in self.counts]

    @staticmethod
    def _start(url: str, count: int) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "bench.ws_clients", url, CHANNEL, str(count)]
        return subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()
        )

    async def ask(self, command: str | Callable[[int], str]) -> list[dict[str, Any]]:
        """Send each process a command (or one made from its connection count); their
        answers, waited for together."""
        for process, count in zip(self.processes, self.counts, strict=True):
            assert process.stdin is not None
            process.stdin.write((command(count) if callable(command) else command) + "\n")
            process.stdin.flush()
        return await asyncio.gather(*(asyncio.to_thread(self._answer, p) for p in self.processes))

    @staticmethod
    def _answer(process: subprocess.Popen[str]) -> dict[str, Any]:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process exited ({process.wait()})")
        answer: dict[str, Any] = frames.decode(line) or {}
        return answer

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(OSError, ValueError):
                assert process.stdin is not None
                process.stdin.write("exit\n")
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


async def _idle_and_broadcast(
    url: str,
    gateway: Service,
    redis_client: Any,
    n: int,
    rounds: int,
    labels: tuple[str, ...] = ("small", "main"),
) -> dict[str, Any]:
    """Idle memory and broadcasts at ``n`` clients ("main"; with ``labels`` also "small", a
    tenth, and "large", twice as many); at ``n`` on the one-process gateway, again with 1%
    of the clients not reading. Twice as many is measured on the ``--workers 2`` gateway:
    one process holds no more connections than its open-file limit (20,000 here) allows."""
    assert gateway.process is not None
    pid = gateway.process.pid
    out: dict[str, Any] = {}
    sizes = {"small": max(10, n // 10), "main": n, "large": 2 * n}
    for label, size in sizes.items():
        if label not in labels:
            continue
        rss_before, redis_before = _tree_rss(pid), _redis_memory(redis_client)
        clients = _ClientProcesses(url, size)
        try:
            opened = await clients.ask("open")
            held = sum(a["opened"] for a in opened)
            failures: Counter[str] = Counter()
            for answer in opened:
                failures.update(answer["failures"])
            await asyncio.sleep(2)  # let the gateway settle before reading its memory
            rss_after, redis_after = _tree_rss(pid), _redis_memory(redis_client)
            part: dict[str, Any] = {
                "requested": size,
                "held": held,
                "open_failures": dict(failures),
                "kb_per_connection": (rss_after - rss_before) / 1024 / max(1, held),
                "gateway_rss_mb": {"before": rss_before / 2**20, "after": rss_after / 2**20},
                "redis_bytes_per_connection": (redis_after - redis_before) / max(1, held),
                "client_processes": CLIENT_PROCESSES,
                "broadcast": await _broadcast(clients, held, rounds, pid),
            }
            if label == "main" and "small" in labels:
                part["slow"] = await _broadcast(clients, held, rounds, pid, slow=SLOW_FRACTION)
            out[label] = part
        finally:
            clients.close()
        await asyncio.sleep(2)  # the gateway lets the closed connections go
    return out


async def _broadcast(
    clients: _ClientProcesses, held: int, rounds: int, gateway_pid: int, slow: float = 0.0
) -> dict[str, Any]:
    """``rounds`` events published on the meeting channel every client follows; with
    ``slow``, that fraction of each process's clients stops reading first. Beside the
    latencies, the CPU the gateway and the clients spent per frame (/proc)."""
    from meetingtasks.events import Event, EventBus

    if slow:
        await clients.ask(lambda count: f"slow {max(1, round(count * slow))}")
    bus = EventBus()
    sent_at: dict[int, float] = {}
    client_pids = [process.pid for process in clients.processes]
    cpu_before = _tree_cpu([gateway_pid]), _tree_cpu(client_pids)
    for seq in range(rounds):
        sent_at[seq] = time.monotonic()
        bus.publish(CHANNEL, Event("meeting.user_joined", {"bench_seq": seq}, "bench",
                                   meeting_id=MEETING))  # fmt: skip
        await asyncio.sleep(1 + held / 10_000)  # every frame is in before the next event
        progress(seq + 1, rounds)
    bus.stop()
    gateway_cpu = _tree_cpu([gateway_pid]) - cpu_before[0]
    client_cpu = _tree_cpu(client_pids) - cpu_before[1]
    arrivals: defaultdict[int, list[float]] = defaultdict(list)
    for answer in await clients.ask("report"):
        for seq, times in answer["arrivals"].items():
            arrivals[int(seq)] += times
    latencies = [t - sent_at[seq] for seq, times in arrivals.items() for t in times]
    readers = held - (sum(max(1, round(c * slow)) for c in clients.counts) if slow else 0)
    reach_all = [max(times) - sent_at[seq] for seq, times in arrivals.items()
                 if len(times) >= readers]  # fmt: skip
    # One event's p99 over its clients, then the median over events: a pause of the
    # shared machine during one event moves the pooled p99, hardly this one.
    round_p99 = sorted(percentile([t - sent_at[seq] for t in times], 99) * 1000
                       for seq, times in arrivals.items() if times)  # fmt: skip
    return {
        **summary_ms(latencies),
        "round_p99_median": round(statistics.median(round_p99), 3) if round_p99 else None,
        "subscribers": held,
        "reading": readers,
        "rounds": rounds,
        "delivered": len(latencies),
        "expected": readers * rounds,
        "reach_all": summary_ms(reach_all),
        # Idle seconds between rounds cost ~nothing; the CPU is the frames'.
        "gateway_cpu_us_per_frame": round(gateway_cpu * 1e6 / max(1, held * rounds), 2),
        "client_cpu_us_per_frame": round(client_cpu * 1e6 / max(1, held * rounds), 2),
    }


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


def _tree(pids: Iterable[int]) -> Iterator[Path]:
    """/proc directories of processes and all their descendants (gone ones skipped)."""
    pending = list(pids)
    while pending:
        current = Path(f"/proc/{pending.pop()}")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in (current / "task").iterdir():
                pending += [int(p) for p in (task / "children").read_text().split()]
            yield current


def _tree_cpu(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by processes and all their descendants."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for proc in _tree(pids):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    total = 0
    for proc in _tree([pid]):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _redis_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _raise_open_files_limit() -> None:
    """Tens of thousands of sockets, the gateway's and the clients' (they inherit it):
    as many descriptors as root may raise the limit to, else the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 1 << 17), max(hard, 1 << 17)))
        return
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
