"""The benchmark run: one private redis-server, every measurement on it, then the reports.

``python -m bench [--quick] [--only GROUPS] [--profile]`` (``scripts/bench`` makes sure the
virtualenv is there first). The server gets a free port and its own data directory; the
environment of every child process points at it, so nothing here can touch another
Redis. Between measurements the server is emptied.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import redis_ceiling
from bench.child import run_child
from bench.config import REPO_ROOT, BenchConfig, from_args
from bench.figures import SPECS, Results, Status
from bench.publish import KINDS as PUBLISH_KINDS
from bench.report import format_value, write_all

#: Key prefix of our app's Redis keys during the benchmark.
NAMESPACE = "mtbench"
OnProgress = Callable[[int, int], None]


@dataclass
class Step:
    group: str
    title: str
    #: Figures the step fills; marked failed if it raises.
    keys: tuple[str, ...]
    run: Callable[[OnProgress], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchRun:
    def __init__(self, config: BenchConfig, console: Console):
        self.config = config
        self.console = console
        self.results = Results(config=config.to_json())
        self.workdir = Path(tempfile.mkdtemp(prefix="mt-bench-"))
        self.logs = self.workdir / "logs"
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.failed = False

    # -- the private Redis -------------------------------------------------------------------

    def point_environment_at_private_redis(self) -> None:
        """Before anything imports meetingtasks: its settings are read once per process,
        and every child and worker inherits this environment."""
        os.environ["MEETINGTASKS_REDIS_URL"] = self.url
        os.environ["BENCH_REDIS_URL"] = self.url
        os.environ["MEETINGTASKS_NAMESPACE"] = NAMESPACE
        os.environ.setdefault("MEETINGTASKS_SECRET", secrets.token_hex(32))

    def reset_redis(self) -> None:
        """Empty the server and compact its append-only file, so no measurement inherits
        the previous one's data or an AOF rewrite in progress."""
        client = redis.Redis.from_url(self.url)
        with contextlib.closing(client):
            client.flushall()
            with contextlib.suppress(redis.ResponseError):  # a rewrite already running
                client.bgrewriteaof()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                info = client.info("persistence")
                if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                    break
                time.sleep(0.1)

    # -- the steps -----------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        c = self.config
        steps: list[Step] = []
        keys: tuple[str, ...]
        if "dispatch" in c.groups:
            keys = tuple(f"dispatch.{kind}" for kind in PUBLISH_KINDS)
            title = "publish loops, plain and ours in turn"
            steps.append(Step("dispatch", title, keys, self._publish(keys)))
        if "worker" in c.groups:
            for app in ("plain", "ours"):
                for concurrency in (1, 2):
                    key = f"worker.{app}_c{concurrency}"
                    title = f"{app} worker -c {concurrency}"
                    steps.append(Step("worker", title, (key,), self._worker(app, concurrency, key)))
            # Ours as deployed: without -c, the pool processes our settings choose.
            default = self._default_pool_processes()
            key, title = "worker.ours_default", f"ours worker, default -c {default}"
            label = f"ours (-Q default), per machine (default -c {default})"
            steps.append(Step("worker", title, (key,), self._worker("ours", default, key, label)))
        if "latency" in c.groups:
            for app in ("plain", "ours"):
                keys = (f"latency.{app}_p50", f"latency.{app}_p99")
                title = f"{app} submit → result at {c.rate:g}/s"
                steps.append(Step("latency", title, keys, self._latency(app, keys)))
        if "latency" in c.groups:
            keys = ("latency.foreign_p50", "latency.foreign_p99")
            title = "a foreign producer's inbox → task start"
            steps.append(Step("latency", title, keys, self._foreign(keys)))
        if "gateway" in c.groups:
            keys = tuple(s.key for s in SPECS if s.group == "gateway")
            steps.append(Step("gateway", "gateway over WebSocket", keys, self._gateway(keys)))
        if "ai" in c.groups:
            title = "plain -c 8, tasks waiting 200 ms"
            run = self._wait_drain("plain", 8, c.wait_n_plain, "ai.plain_wait_c8")
            steps.append(Step("ai", title, ("ai.plain_wait_c8",), run))
            title = "ours -Q ai, tasks waiting 200 ms"
            run = self._wait_drain("ours", None, c.wait_n, "ai.ours_wait")
            steps.append(Step("ai", title, ("ai.ours_wait",), run))
            for app in ("plain", "ours"):
                key = f"ai.{app}_own_io"
                title = f"{app}: tasks waiting 200 ms, then two Redis round trips of their own"
                run = self._wait_drain(app, None, c.own_io_n, key, task="own_io")
                steps.append(Step("ai", title, (key,), run))
            steps.append(Step("ai", "AI tasks in flight", ("ai.in_flight",), self._in_flight()))
            keys = ("ai.model_tokens", "ai.model_first_token")
            steps.append(Step("ai", "real model: client vs in-process", keys, self._model(keys)))
            title = "real model behind an OpenAI-compatible server: client vs direct"
            steps.append(Step("ai", title, ("ai.openai_tokens",), self._model_openai()))
        if "soak" in c.groups:
            plain_seconds = max(10, round(0.3 * c.soak_seconds))
            for app, seconds in (("plain", plain_seconds), ("ours", c.soak_seconds)):
                keys = tuple(s.key for s in SPECS if s.key.startswith(f"soak.{app}_"))
                steps.append(Step("soak", f"soak: {app}", keys, self._soak(app, seconds)))
        if "redis" in c.groups:
            keys = tuple(s.key for s in SPECS if s.group == "redis")
            steps.append(Step("redis", "redis-benchmark", keys, self._redis(keys)))
        if "replication" in c.groups:
            keys = tuple(s.key for s in SPECS if s.group == "replication")
            title = "sends with a replica, WAIT off and on"
            steps.append(Step("replication", title, keys, self._replication(keys)))
        if "redis-cost" in c.groups:
            keys = tuple(s.key for s in SPECS if s.group == "redis-cost")
            title = f"Redis cost per task, {c.cost_n:,} sent then drained, fresh Redis each"
            steps.append(Step("redis-cost", title, keys, self._redis_cost()))
        if "poison" in c.groups:
            keys = tuple(s.key for s in SPECS if s.group == "poison")
            title = f"{c.poison_bad:,} hostile messages among {c.poison_good:,} good tasks"
            steps.append(Step("poison", title, keys, self._poison()))
        return steps

    def _foreign(self, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            params = {"n": self.config.foreign_n, "url": self.url, "log_dir": str(self.logs)}
            out = run_child("foreign", params, on_progress)
            p50, p99 = keys
            self.results.set(p50, out["p50"], **out)
            self.results.set(p99, out["p99"])

        return run

    def _redis_cost(self) -> Callable[[OnProgress], None]:
        """Plain Celery and ours in turn, each kind on a fresh Redis without AOF (Redis's
        own work only), round after round; a figure is the median of its rounds. Redis
        gets a CPU of its own (the last), the sender and the worker the others: what
        Redis spends per task then varies far less with what runs beside it."""

        def run(on_progress: OnProgress) -> None:
            from meetingtasks.run.embedded_redis import RedisServer

            c = self.config
            cases = [(app, kept) for app in ("plain", "ours") for kept in (False, True)]
            cases.append(("ours_traced", False))  # ours with OpenTelemetry on
            outs: dict[tuple[str, bool], list[dict[str, Any]]] = {case: [] for case in cases}
            total = c.cost_rounds * len(cases) * 2 * c.cost_n
            done = 0
            for _ in range(c.cost_rounds):
                for app, kept in cases:
                    server = RedisServer(port=_free_port(), directory=self.workdir / "cost",
                                         appendfsync="off")  # fmt: skip
                    server.start()
                    cpus = sorted(os.sched_getaffinity(0))

                    def progress(d: int, _: int, before: int = done) -> None:
                        on_progress(before + d, total)

                    try:
                        if len(cpus) > 1 and server.process is not None:
                            os.sched_setaffinity(server.process.pid, {cpus[-1]})
                            os.sched_setaffinity(0, set(cpus[:-1]))  # the child inherits it
                        params = {"app": app.removesuffix("_traced"), "kept": kept,
                                  "n": c.cost_n, "url": server.url, "log_dir": str(self.logs),
                                  "traced": app.endswith("_traced")}  # fmt: skip
                        outs[(app, kept)].append(run_child("redis_cost", params, progress))
                    finally:
                        os.sched_setaffinity(0, set(cpus))
                        server.stop()
                        shutil.rmtree(self.workdir / "cost", ignore_errors=True)
                    done += 2 * c.cost_n
            for (app, kept), rounds in outs.items():
                kind = "kept" if kept else "ignored"
                median = statistics.median
                details = {"rounds": rounds}
                self.results.set(f"cost.{app}_{kind}_us", median(r["cpu_us"] for r in rounds),
                                 **details)  # fmt: skip
                if not kept:
                    self.results.set(f"cost.{app}_sender_us",
                                     median(r["sender_cpu_us"] for r in rounds))  # fmt: skip
                    self.results.set(f"cost.{app}_worker_us",
                                     median(r["worker_cpu_us"] for r in rounds))  # fmt: skip
                if app.endswith("_traced"):
                    continue  # its Redis, sender and worker CPU are what it is for
                self.results.set(f"cost.{app}_{kind}_commands",
                                 median(r["commands"] for r in rounds))  # fmt: skip
                self.results.set(f"cost.{app}_{kind}_ceiling",
                                 median(r["ceiling"] for r in rounds))  # fmt: skip
                if not kept:
                    self.results.set(f"cost.{app}_worker_steady_us",
                                     median(r["worker_cpu_steady_us"] for r in rounds))  # fmt: skip

        return run

    def _poison(self) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            c = self.config
            params = {"good": c.poison_good, "bad": c.poison_bad, "log_dir": str(self.logs)}
            out = run_child("poison", params, on_progress)
            label = f"good tasks done, of {out['good_sent']:,} sent"
            self.results.set("poison.good_done", 100 * out["good_done"] / out["good_sent"],
                             label=label, **out)  # fmt: skip
            label = f"hostile messages set aside with a reason, of {out['bad_pushed']:,}"
            self.results.set("poison.bad_set_aside", 100 * out["bad_set_aside"] / out["bad_pushed"],
                             label=label, reasons=out["reasons"])  # fmt: skip
            label = f"workers alive at the end, of {out['workers']}"
            self.results.set("poison.workers_alive", 100 * out["workers_alive"] / out["workers"],
                             label=label)  # fmt: skip
            self.results.set("poison.seconds", out["seconds"])

        return run

    def _replication(self, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        """``task.delay()`` one at a time with a replica attached, MIN_REPLICAS 0 and 1 in
        turn, round by round: the ratio is what waiting for the replica costs a send."""

        def run(on_progress: OnProgress) -> None:
            from meetingtasks.run.embedded_redis import RedisServer

            c = self.config
            replica = RedisServer(port=_free_port(), directory=self.workdir / "replica")
            replica.start()
            try:
                follower = redis.Redis.from_url(replica.url)
                follower.replicaof("127.0.0.1", self.port)
                deadline = time.monotonic() + 60
                while follower.info("replication").get("master_link_status") != "up":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the bench's replica did not sync in 60 s")
                    time.sleep(0.1)
                samples: dict[str, list[float]] = {key: [] for key in keys}
                for round_ in range(c.repeat):
                    for index, (key, wanted) in enumerate(zip(keys, ("0", "1"), strict=True)):
                        os.environ["MEETINGTASKS_MIN_REPLICAS"] = wanted
                        done = (round_ * len(keys) + index) * c.publish_n

                        def progress(d: int, _: int, before: int = done) -> None:
                            on_progress(before + d, c.repeat * len(keys) * c.publish_n)

                        params = {"kind": "delay", "n": c.publish_n, "batch_size": c.batch_size}
                        samples[key].append(run_child("publish", params, progress)["rate"])
            finally:
                os.environ.pop("MEETINGTASKS_MIN_REPLICAS", None)
                replica.stop()
            base, waited = samples[keys[0]], samples[keys[1]]
            ratios = [w / b for w, b in zip(waited, base, strict=True)]
            for key, rates in samples.items():
                details: dict[str, Any] = {"samples": [round(r, 1) for r in rates]}
                if key == keys[1]:
                    details["ratios_in_round"] = [round(r, 2) for r in ratios]
                    details["ratio_median"] = round(statistics.median(ratios), 2)
                self.results.set(key, statistics.median(rates), Status.MEASURED, **details)

        return run

    def _publish(self, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        """Each round runs one loop of every kind, in turn, each in a fresh child on an
        emptied Redis; a figure is the median of its rounds, and its ratio to plain
        Celery's the median of the ratios within each round (``bench/publish.py``)."""

        def run(on_progress: OnProgress) -> None:
            c = self.config
            total = c.repeat * len(keys) * c.publish_n
            samples: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
            runs = 0
            for round_ in range(c.repeat):
                for key in keys:
                    kind = key.split(".", 1)[1]
                    profile = c.output_dir / f"profile-{kind}.txt" if c.profile else None
                    params = {
                        "kind": kind, "n": c.publish_n, "batch_size": c.batch_size,
                        "profile_path": str(profile) if profile and not round_ else None,
                    }  # fmt: skip

                    def progress(done: int, _: int, before: int = runs * c.publish_n) -> None:
                        on_progress(before + done, total)

                    self.reset_redis()
                    samples[key].append(run_child("publish", params, progress))
                    runs += 1
            plain = [out["rate"] for out in samples["dispatch.plain_delay"]]
            for key, outs in samples.items():
                rates = [out["rate"] for out in outs]
                details: dict[str, Any] = {
                    "samples": [round(rate, 1) for rate in rates], "n": c.publish_n,
                    "repeat": c.repeat, "queued": [out["queued"] for out in outs],
                }  # fmt: skip
                if key != "dispatch.plain_delay":
                    ratios = [ours / base for ours, base in zip(rates, plain, strict=True)]
                    details["ratios_in_round"] = [round(r, 2) for r in ratios]
                    details["ratio_median"] = round(statistics.median(ratios), 2)
                if key == "dispatch.batch":
                    details["label"] = f"ours: `dispatch_batch()`, {c.batch_size:,} requests a call"
                notes = sorted({out["note"] for out in outs if out.get("note")})
                self.results.set(key, statistics.median(rates), Status.MEASURED,
                                 "; ".join(notes), **details)  # fmt: skip

        return run

    @staticmethod
    def _default_pool_processes() -> int:
        from meetingtasks.base.settings import Settings

        return Settings().pool_processes

    def _worker(
        self, app: str, concurrency: int, key: str, label: str | None = None
    ) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            n = self.config.worker_n
            filled = run_child("prefill", {"app": app, "n": n}, lambda d, t: on_progress(d, 2 * t))
            if filled["queued"] != n:
                raise RuntimeError(f"prefill queued {filled['queued']} of {n} tasks")
            params = {"app": app, "concurrency": concurrency, "n": n, "log_dir": str(self.logs)}
            out = run_child("drain", params, lambda d, t: on_progress(n + d, 2 * n))
            if label is not None:
                out["label"] = label
            self.results.set(key, out.pop("rate"), **out)

        return run

    def _wait_drain(
        self, app: str, concurrency: int | None, n: int, key: str, task: str = "wait"
    ) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            params = {"app": app, "n": n, "task": task}
            filled = run_child("prefill", params, lambda d, t: on_progress(d, 2 * t))
            if filled["queued"] != n:
                raise RuntimeError(f"prefill queued {filled['queued']} of {n} tasks")
            params = {**params, "concurrency": concurrency, "log_dir": str(self.logs)}
            out = run_child("drain", params, lambda d, t: on_progress(n + d, 2 * n))
            self.results.set(key, out.pop("rate"), **out)

        return run

    def _in_flight(self) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            params = {"n": self.config.in_flight_n, "log_dir": str(self.logs)}
            out = run_child("ai_in_flight", params, on_progress)
            self.results.set("ai.in_flight", out.pop("peak"), **out)

        return run

    def _soak(self, app: str, seconds: int) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            params = {"app": app, "rate": self.config.soak_rate, "seconds": seconds,
                      "log_dir": str(self.logs)}  # fmt: skip
            out = run_child("soak", params, on_progress)
            series = out.pop("series")
            self.results.set(f"soak.{app}_rate", out["rate"], **out)
            self.results.set(f"soak.{app}_peak", out["peak_mb"], series=series)
            self.results.set(f"soak.{app}_kept", out["kept_bytes_per_task"],
                             ttl_seconds=out["kept_ttl_seconds"])  # fmt: skip
            if app == "ours" and out["growth_percent"] is not None:
                self.results.set("soak.ours_growth", out["growth_percent"])

        return run

    def _model(self, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            params = {"rounds": self.config.model_rounds, "log_dir": str(self.logs)}
            out = run_child("ai_model", params, on_progress)
            tokens, first = keys
            self.results.set(tokens, 100 * out["ratio_median"], **out)
            self.results.set(first, out["first_token_trip"]["p50"], **out)

        return run

    def _model_openai(self) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            params = {"rounds": self.config.model_rounds, "log_dir": str(self.logs)}
            out = run_child("ai_model_openai", params, on_progress)
            self.results.set("ai.openai_tokens", 100 * out["ratio_median"], **out)

        return run

    def _latency(self, app: str, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            c = self.config
            params = {"app": app, "rate": c.rate, "duration": c.duration, "log_dir": str(self.logs)}
            out = run_child("latency", params, on_progress)
            if not out.get("count"):
                raise RuntimeError(f"no result arrived: {out}")
            note = f"{out['missing']} of {out['sent']} results missing" if out["missing"] else ""
            for key, q in zip(keys, ("p50", "p99"), strict=True):
                label = f"{self._app_name(app)} → result at {c.rate:g}/s, {q}"
                self.results.set(key, out[q], note=note, label=label, **out)

        return run

    @staticmethod
    def _app_name(app: str) -> str:
        return "plain Celery `delay()`" if app == "plain" else "ours `delay()` (no gateway)"

    def _gateway(self, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            c = self.config
            params = {"rate": c.rate, "duration": c.duration, "connections": c.connections,
                      "llm_samples": c.llm_samples, "broadcast_rounds": c.broadcast_rounds,
                      "log_dir": str(self.logs)}  # fmt: skip
            self._gateway_figures(run_child("gateway", params, on_progress))

        return run

    def _gateway_figures(self, parts: dict[str, Any]) -> None:
        c, r = self.config, self.results

        def part(name: str, keys: list[str]) -> dict[str, Any] | None:
            out = parts.get(name) or {"error": "not run"}
            if "error" in out:
                r.skip(keys, str(out["error"]).splitlines()[0], failed=True)
                self.failed = True
                return None
            return out

        if e2e := part("e2e", ["latency.ws_p50", "latency.ws_p99"]):
            for q in ("p50", "p99"):
                label = f"e2e WebSocket submit → result frame at {c.rate:g}/s, {q}"
                r.set(f"latency.ws_{q}", e2e[q], label=label, **e2e)
        if llm := part("llm", ["latency.llm_first_delta", "latency.llm_reply"]):
            r.set("latency.llm_first_delta", llm["first_delta"]["p50"], **llm)
            r.set("latency.llm_reply", llm["reply"]["p50"], **llm)
        if idle := part("idle", ["ws.idle_connections", "ws.memory_per_connection"]):
            main = idle["main"]
            r.set("ws.idle_connections", main["held"], **main)
            r.set("ws.memory_per_connection", main["kb_per_connection"], **main)
            for name, prefix in (("small", "ws.broadcast_small"), ("main", "ws.broadcast")):
                broadcast = idle[name]["broadcast"]
                for q in ("p50", "p99"):
                    label = f"broadcast event → each of {broadcast['subscribers']:,} clients, {q}"
                    r.set(f"{prefix}_{q}", broadcast[q], label=label, **broadcast)
            slow, normal = main["slow"], main["broadcast"]
            idle_ones = slow["subscribers"] - slow["reading"]
            label = (f"broadcast with {idle_ones} of {slow['subscribers']:,} clients not "
                     "reading → each reading client, p99")  # fmt: skip
            r.set("ws.broadcast_slow_p99", slow["p99"], label=label, **slow)
            # Each event's p99, the median over events, compared: steadier than the
            # pooled p99, which one pause of the shared machine moves (bench/gateway.py).
            key = "round_p99_median" if normal.get("round_p99_median") else "p99"
            growth = 100 * (slow[key] - normal[key]) / normal[key]
            r.set("ws.broadcast_slow_growth", round(growth, 1), compared=key, slow=slow,
                  normal=normal)  # fmt: skip
        workers2 = ["ws.broadcast_workers2_p99", "ws.broadcast_large_p50", "ws.broadcast_large_p99"]
        if workers := part("workers2", workers2):
            broadcast = workers["main"]["broadcast"]
            label = (f"broadcast event → each of {broadcast['subscribers']:,} clients, "
                     "`--workers 2` gateway, p99")  # fmt: skip
            r.set("ws.broadcast_workers2_p99", broadcast["p99"], label=label, **broadcast)
            broadcast = workers["large"]["broadcast"]
            for q in ("p50", "p99"):
                label = (f"broadcast event → each of {broadcast['subscribers']:,} clients, "
                         f"`--workers 2` gateway, {q}")  # fmt: skip
                r.set(f"ws.broadcast_large_{q}", broadcast[q], label=label, **broadcast)

    def _redis(self, keys: tuple[str, ...]) -> Callable[[OnProgress], None]:
        def run(on_progress: OnProgress) -> None:
            for key, value in redis_ceiling.run(self.port, self.config.redis_n).items():
                self.results.set(key, value)

        return run

    # -- running ---------------------------------------------------------------------------------

    def execute(self) -> int:
        self.point_environment_at_private_redis()
        from meetingtasks.run.embedded_redis import RedisServer  # after the environment is set

        server = RedisServer(
            port=self.port, directory=self.workdir / "redis", appendfsync=self.config.appendfsync
        )
        self.console.print(f"[bold]meetingtasks benchmark[/] on a private Redis at {self.url}")
        self.config.output_dir.mkdir(parents=True, exist_ok=True)
        server.start()
        try:
            self.results.environment = environment(self.url, self.config)
            self._run_steps(self.steps())
            self.results.environment["load_average_end"] = os.getloadavg()
        finally:
            server.stop()
        written = write_all(self.results, self.config.output_dir, plot=self.config.plot)
        self.console.print(Markdown((self.config.output_dir / "results.md").read_text()))
        for path in written:
            self.console.print(f"wrote {path}")
        if self.config.plot and not any(p.suffix == ".png" for p in written):
            self.console.print("[yellow]no plot: matplotlib missing (pip install -e '.[bench]')")
        if self.failed:
            self.console.print(f"[red]some measurements failed[/]; logs kept in {self.logs}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 1 if self.failed else 0

    def _run_steps(self, steps: list[Step]) -> None:
        columns = (
            SpinnerColumn(), TextColumn("{task.description:<36}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, console=self.console, refresh_per_second=4) as progress:
            overall = progress.add_task("benchmark", total=len(steps))
            for step in steps:
                task = progress.add_task(step.title, total=None)

                def on_progress(done: int, total: int, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total)

                self.reset_redis()
                try:
                    step.run(on_progress)
                except Exception as exc:
                    self.failed = True
                    message = str(exc).strip() or type(exc).__name__
                    self.results.skip(step.keys, message.splitlines()[0], failed=True)
                    progress.console.print(f"[red]✗ {step.title} failed[/]\n{message[-3000:]}")
                else:
                    measured = any(self.results.figure(k).value is not None for k in step.keys)
                    mark = "[green]✓[/]" if measured else "[yellow]-[/]"
                    progress.console.print(f"{mark} {step.title}: {self._summary(step)}")
                progress.remove_task(task)
                progress.advance(overall)

    def _summary(self, step: Step) -> str:
        parts = []
        for key in step.keys:
            figure = self.results.figure(key)
            if figure.value is None:
                parts.append(f"{figure.status}: {figure.note}")
            else:
                parts.append(format_value(figure.value, figure.spec.unit))
        return ", ".join(dict.fromkeys(parts))


def environment(url: str, config: BenchConfig) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    client = redis.Redis.from_url(url)
    with contextlib.closing(client):
        redis_version = client.info("server")["redis_version"]
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(pages / 2**30),
        "python": platform.python_version(),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "websockets": version("websockets"),
        "redis_server": redis_version,
        "appendfsync": config.appendfsync,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "load_average_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    config = from_args(argv)
    console = Console()
    try:
        return BenchRun(config, console).execute()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
