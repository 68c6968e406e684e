"""The benchmark harness (bench/): its report, its bookkeeping, its gateway client, a tiny run.

No figure is asserted here (timings are never tested); only that the harness
measures, reports and skips what it should.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from bench import frames, gateway, redis_ceiling
from bench.config import QUICK, from_args
from bench.figures import SPECS, Results, Status
from bench.report import write_all
from bench.stats import completion_rate, percentile, summary_ms

REPO = Path(__file__).resolve().parents[1]


def fake_results() -> Results:
    results = Results(
        environment={
            "cpu_count": 2, "memory_gib": 24, "python": "3.11.7", "celery": "5.7.0",
            "kombu": "5.7.0", "redis_py": "8.1.0", "redis_server": "7.0.15",
            "appendfsync": "always", "date": "2026-01-01T00:00:00+00:00",
            "git_commit": "0123456789abcdef", "git_dirty": True,
            "load_average_start": (0.5, 0.4, 0.3), "load_average_end": (1.5, 1.0, 0.5),
        },
        config=QUICK.to_json(),
    )  # fmt: skip
    results.set("dispatch.plain_delay", 2000.0)
    results.set("dispatch.delay", 1000.0)
    results.set("dispatch.batch", 4000.0, Status.PROVISIONAL, "dispatch_batch not built yet")
    results.skip(["dispatch.dispatcher_single"], "TaskDispatcher not built yet")
    results.set("latency.plain_p99", 20.0)
    results.set("latency.ws_p99", 50.0)
    results.skip(["ws.idle_connections"], "boom", failed=True)
    return results


def test_report_shows_ratios_targets_and_why_a_figure_is_missing(tmp_path: Path) -> None:
    written = write_all(fake_results(), tmp_path, plot=False)
    assert [p.name for p in written] == ["results.json", "results.md"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["figures"]) == {spec.key for spec in SPECS}
    send = data["figures"]["dispatch.delay"]
    assert send["ratio_to_plain_celery"] == 0.5
    assert send["ratio_to_target"] == 0.2 and send["meets_target"] is False
    assert data["figures"]["latency.ws_p99"]["meets_target"] is True
    assert data["figures"]["dispatch.dispatcher_single"]["value"] is None
    assert data["environment"]["cpu_count"] == 2

    table = (tmp_path / "results.md").read_text()
    assert "2 CPUs" in table and "commit 0123456789 + uncommitted changes" in table
    assert "| 1,000 tasks/s | 0.50\N{MULTIPLICATION SIGN} | ≥ 5,000 tasks/s |" in table
    assert "(provisional)" in table and "dispatch_batch not built yet" in table
    assert "not measured: TaskDispatcher not built yet" in table
    assert "failed: failed: boom" not in table and "failed: boom" in table
    assert "left out of this run" in table  # figures the run did not reach


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = write_all(fake_results(), tmp_path, plot=True)
    assert (tmp_path / "results.png") in written
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_without_value_must_say_it_was_not_measured() -> None:
    results = Results()
    with pytest.raises(ValueError):
        results.set("dispatch.delay", None)
    with pytest.raises(KeyError):
        results.set("dispatch.made_up", 1.0)


def test_quick_sizes_and_overrides() -> None:
    config = from_args(["--quick", "--worker-n", "100", "--only", "dispatch,redis"])
    assert config.quick and config.worker_n == 100 and config.publish_n == QUICK.publish_n
    assert config.groups == ("dispatch", "redis")
    with pytest.raises(SystemExit):
        from_args(["--only", "nonsense"])


def test_stats() -> None:
    assert percentile([3, 1, 2, 4], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99
    assert summary_ms([0.001, 0.002])["p99"] == 2.0
    assert summary_ms([]) == {"count": 0}
    rate = completion_rate([10.0 + i * 0.01 for i in range(101)])
    assert rate["rate"] == pytest.approx(100.0)


def test_redis_benchmark_csv() -> None:
    text = (
        '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms"\n'
        '"SET","84388.19","0.532","0.168","0.487"\n'
        '"LPUSH","82644.62","0.539","0.160","0.511"\n'
    )
    assert redis_ceiling.parse_csv(text) == {"set": 84388.19, "lpush": 82644.62}


def test_tracker_times_each_request_from_its_frames() -> None:
    tracker = frames.RequestTracker()
    tracker.on_send("r1", 1.0)
    tracker.on_send("r2", 1.0)
    tracker.on_frame({"op": "accepted", "request_id": "r1", "task_id": "t1"}, 1.01)
    tracker.on_frame({"op": "delta", "task_id": "t1", "index": 0, "delta": "Hi"}, 1.02)
    assert tracker.on_frame({"op": "result", "request_id": "r1", "status": "completed"}, 1.05)
    tracker.on_frame({"op": "error", "request_id": "r2", "code": "rate_limited"}, 1.03)
    tracker.on_frame({"op": "error", "code": "bad_frame"}, 1.04)
    assert tracker.latencies(tracker.finished) == [pytest.approx(0.05)]
    assert tracker.latencies(tracker.first_delta) == [pytest.approx(0.02)]
    assert tracker.outcomes() == {"completed": 1, "error:rate_limited": 1}
    assert tracker.other == {"error:bad_frame": 1}
    assert frames.find_value({"op": "event", "event": {"payload": {"bench_seq": 3}}}, "bench_seq")
    assert frames.decode("not json") is None and frames.decode("[1]") is None


class FakeGateway:
    """The gateway's wire protocol in memory: enough to drive the benchmark's client."""

    def __init__(self) -> None:
        self.subscribers: list[FakeConnection] = []

    def publish(self, channel: str, event: Any) -> None:
        frame = json.dumps(
            {"op": "event", "channel": channel, "event": event.model_dump(mode="json")}
        )
        for connection in self.subscribers:
            connection.inbox.put_nowait(frame)


class FakeConnection:
    def __init__(self, gateway: FakeGateway) -> None:
        self.gateway = gateway
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()

    async def send(self, text: str) -> None:
        frame = json.loads(text)
        reply = self.inbox.put_nowait
        if frame["op"] == "ping":
            reply(json.dumps({"op": "pong"}))
        elif frame["op"] == "subscribe":
            self.gateway.subscribers.append(self)
        elif frame["op"] == "submit":
            rid, tid = frame["request_id"], "t-" + frame["request_id"]
            reply(json.dumps({"op": "accepted", "request_id": rid, "task_id": tid}))
            if frame["type"] == gateway.LLM_TYPE:
                for i, piece in enumerate(("Hel", "lo")):
                    reply(json.dumps({"op": "delta", "task_id": tid, "index": i, "delta": piece}))
            result = {"op": "result", "request_id": rid, "task_id": tid, "status": "completed"}
            reply(json.dumps(result))

    async def close(self) -> None:
        self.inbox.put_nowait(None)

    def __aiter__(self) -> FakeConnection:
        return self

    async def __anext__(self) -> str:
        message = await self.inbox.get()
        if message is None:
            raise StopAsyncIteration
        return message


def test_gateway_client_measures_every_part_against_a_fake_gateway(monkeypatch) -> None:
    fake = FakeGateway()

    async def connect(url: str) -> FakeConnection:
        return FakeConnection(fake)

    closed = types.ModuleType("websockets.exceptions")
    closed.ConnectionClosed = type("ConnectionClosed", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "websockets", types.ModuleType("websockets"))
    monkeypatch.setitem(sys.modules, "websockets.exceptions", closed)
    monkeypatch.setattr(gateway, "_connect", connect)
    import meetingtasks.events

    monkeypatch.setattr(meetingtasks.events, "EventBus", lambda: fake)
    service = types.SimpleNamespace(
        process=types.SimpleNamespace(pid=os.getpid()), alive=lambda: True, log_tail=str
    )
    redis_client = types.SimpleNamespace(info=lambda section: {"used_memory": 1000})

    parts = asyncio.run(
        gateway._measure_all("ws://fake/ws", service, redis_client, 200, 0.2, 30, 3, 2)  # type: ignore[arg-type]
    )
    assert parts["e2e"]["count"] == 40 and parts["e2e"]["outcomes"] == {"completed": 40}
    assert parts["llm"]["first_delta"]["count"] == 3 and parts["llm"]["deltas_per_reply"] == 2
    # Idle and broadcast need real sockets (client processes): the real run below.
    assert "error" in parts["idle"]


def test_a_tiny_gateway_run_end_to_end(tmp_path: Path) -> None:
    """The gateway figures on a real gateway, clients in their own processes."""
    command = [
        sys.executable, "-m", "bench", "--quick", "--only", "gateway", "--no-plot",
        "--connections", "40", "--broadcast-rounds", "2", "--rate", "20", "--duration", "1",
        "--llm-samples", "1", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads((tmp_path / "results.json").read_text())["figures"]
    assert figures["ws.idle_connections"]["value"] == 40
    sizes = {"ws.broadcast_small_p99": 10, "ws.broadcast_p99": 40,
             "ws.broadcast_large_p99": 80, "ws.broadcast_workers2_p99": 40}  # fmt: skip
    for key, clients in sizes.items():
        details = figures[key]["details"]
        assert (details["subscribers"], details["delivered"]) == (clients, 2 * clients), key
    slow = figures["ws.broadcast_slow_p99"]["details"]
    assert slow["reading"] == 40 - 4 and slow["delivered"] == 2 * 36  # 1 per client process


def test_a_tiny_quick_run_end_to_end(tmp_path: Path) -> None:
    """Publish loops and redis-benchmark on the run's own private Redis, tiny sizes."""
    command = [
        sys.executable, "-m", "bench", "--quick", "--only", "dispatch,redis", "--no-plot",
        "--publish-n", "50", "--batch-size", "20", "--redis-n", "2000",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads((tmp_path / "results.json").read_text())["figures"]
    assert figures["dispatch.plain_delay"]["status"] == "measured"
    assert figures["dispatch.delay"]["details"]["queued"] == [50 + 50]
    assert figures["dispatch.batch"]["status"] in ("measured", "provisional")
    assert figures["redis.set_p16"]["value"] > 0
    assert figures["worker.plain_c1"]["status"] == "not measured"  # left out by --only


def test_a_tiny_ai_run_end_to_end(tmp_path: Path) -> None:
    """The AI figures, tiny sizes: waits on both apps' workers, AI tasks on a node, the model."""
    command = [
        sys.executable, "-m", "bench", "--quick", "--only", "ai", "--no-plot",
        "--wait-n-plain", "16", "--wait-n", "40", "--in-flight-n", "40", "--model-rounds", "1",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads((tmp_path / "results.json").read_text())["figures"]
    assert figures["ai.plain_wait_c8"]["details"]["completed"] == 16
    assert figures["ai.ours_wait"]["details"]["completed"] == 40
    assert figures["ai.ours_wait"]["ratio_to_plain_celery"] is not None
    in_flight = figures["ai.in_flight"]
    assert in_flight["details"]["outcomes"] == {"completed": 40}
    assert 1 <= in_flight["value"] <= 40
    model = figures["ai.model_tokens"]["details"]
    assert model["tokens"][0] >= 2 and model["reply"].strip()
    assert figures["ai.model_first_token"]["status"] in ("measured", "provisional")


def test_a_tiny_soak_measures_memory_and_what_each_task_leaves(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench", "--quick", "--only", "soak", "--no-plot",
        "--soak-seconds", "10", "--soak-rate", "100", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads((tmp_path / "results.json").read_text())["figures"]
    assert figures["soak.plain_kept"]["value"] == 0  # plain Celery keeps nothing
    assert figures["soak.ours_kept"]["value"] > 0  # ours: a status record, for a while
    assert 0 < figures["soak.ours_kept"]["details"]["ttl_seconds"] <= 60
    series = figures["soak.ours_peak"]["details"]["series"]
    assert (
        len(series) >= 5
        and figures["soak.ours_peak"]["value"] * 1_048_576 >= max(used for _, used in series) * 0.99
    )
    assert figures["soak.ours_rate"]["details"]["sent"] > 0
    assert figures["soak.ours_growth"]["status"] == "measured"
