"""What each figure of the benchmark is, and what one run found for it.

Every figure is declared once here: its unit, the plain Celery figure it is compared
with, and its target (what the project aims at). A run fills values; a figure it could
not measure keeps ``None`` and says why, so no number in the report is ever made up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal


class Status(StrEnum):
    MEASURED = "measured"
    #: Measured, but not with the final component (e.g. batch sends before dispatch_batch).
    PROVISIONAL = "provisional"
    NOT_MEASURED = "not measured"
    FAILED = "failed"


@dataclass(frozen=True)
class FigureSpec:
    key: str
    group: str
    label: str
    unit: str
    better: Literal["higher", "lower"] = "higher"
    #: Key of the plain Celery equivalent this figure is divided by.
    baseline: str | None = None
    #: The target (docs/benchmark.md), in ``unit``.
    target: float | None = None


TASKS = "tasks/s"
MS = "ms"

SPECS: tuple[FigureSpec, ...] = (
    # -- dispatch: publishes per second from one client process ----------------------------
    FigureSpec("dispatch.plain_delay", "dispatch", "plain Celery `delay()` in a loop", TASKS),
    FigureSpec(
        "dispatch.delay", "dispatch", "ours: `task.delay()` one at a time", TASKS,
        baseline="dispatch.plain_delay", target=5000,
    ),
    FigureSpec(
        "dispatch.dispatcher_single", "dispatch", "ours: `TaskDispatcher.dispatch()` one at a time",
        TASKS, baseline="dispatch.plain_delay", target=5000,
    ),
    FigureSpec(
        "dispatch.batch", "dispatch", "ours: batched dispatch", TASKS,
        baseline="dispatch.plain_delay", target=40000,
    ),
    # -- workers: no-op tasks per second, steady state -------------------------------------
    FigureSpec("worker.plain_c1", "worker", "plain Celery worker, per process (-c 1)", TASKS),
    FigureSpec("worker.plain_c2", "worker", "plain Celery worker, per machine (-c 2)", TASKS),
    FigureSpec(
        "worker.ours_c1", "worker", "ours (-Q default), per process (-c 1)", TASKS,
        baseline="worker.plain_c1",
    ),
    FigureSpec(
        "worker.ours_c2", "worker", "ours (-Q default), per machine (-c 2)", TASKS,
        baseline="worker.plain_c2",
    ),
    FigureSpec(
        "worker.ours_default", "worker", "ours (-Q default), per machine (default -c)", TASKS,
        baseline="worker.plain_c2", target=5000,
    ),
    # -- latency: submit -> result ------------------------------------------------------------
    FigureSpec("latency.plain_p50", "latency", "plain Celery `delay()` → result, p50", MS, "lower"),
    FigureSpec("latency.plain_p99", "latency", "plain Celery `delay()` → result, p99", MS, "lower"),
    FigureSpec(
        "latency.ours_p50", "latency", "ours `delay()` → result (no gateway), p50", MS,
        "lower", baseline="latency.plain_p50",
    ),
    FigureSpec(
        "latency.ours_p99", "latency", "ours `delay()` → result (no gateway), p99", MS,
        "lower", baseline="latency.plain_p99",
    ),
    FigureSpec(
        "latency.foreign_p50", "latency",
        "a foreign producer's inbox push → its task starts, idle worker, p50", MS, "lower",
        target=10,
    ),
    FigureSpec(
        "latency.foreign_p99", "latency",
        "a foreign producer's inbox push → its task starts, idle worker, p99", MS, "lower",
    ),
    FigureSpec(
        "latency.ws_p50", "gateway", "e2e WebSocket submit → result frame, p50", MS, "lower",
        baseline="latency.plain_p50", target=10,
    ),
    FigureSpec(
        "latency.ws_p99", "gateway", "e2e WebSocket submit → result frame, p99", MS, "lower",
        baseline="latency.plain_p99", target=100,
    ),
    FigureSpec(
        "latency.llm_first_delta", "gateway", "LLM time to first delta via the gateway, p50", MS,
        "lower",
    ),
    FigureSpec("latency.llm_reply", "gateway", "LLM whole reply via the gateway, p50", MS, "lower"),
    # -- WebSocket connections on one gateway process --------------------------------------
    FigureSpec(
        "ws.idle_connections", "gateway", "idle WebSocket connections on one gateway process",
        "connections", target=10000,
    ),
    FigureSpec(
        "ws.memory_per_connection", "gateway", "gateway memory per idle connection (RSS)", "KB",
        "lower", target=30,
    ),
    # Broadcast: publish → the frame at each client, clients in separate processes, at a
    # tenth of `connections`, at `connections` (the target), and at twice as many.
    FigureSpec(
        "ws.broadcast_small_p50", "gateway", "broadcast event → each of N/10 clients, p50", MS,
        "lower",
    ),
    FigureSpec(
        "ws.broadcast_small_p99", "gateway", "broadcast event → each of N/10 clients, p99", MS,
        "lower",
    ),
    FigureSpec("ws.broadcast_p50", "gateway", "broadcast event → each client, p50", MS, "lower"),
    FigureSpec(
        "ws.broadcast_p99", "gateway", "broadcast event → each client, p99", MS, "lower",
        target=250,
    ),
    FigureSpec(
        "ws.broadcast_large_p50", "gateway",
        "broadcast event → each of 2N clients, `--workers 2` gateway, p50", MS, "lower",
    ),
    FigureSpec(
        "ws.broadcast_large_p99", "gateway",
        "broadcast event → each of 2N clients, `--workers 2` gateway, p99", MS, "lower",
    ),
    FigureSpec(
        "ws.broadcast_slow_p99", "gateway",
        "broadcast with 1% of clients not reading → each reading client, p99", MS, "lower",
    ),
    FigureSpec(
        "ws.broadcast_slow_growth", "gateway",
        "broadcast p99 growth when 1% of clients do not read (each event's p99, median "
        "over events)", "%", "lower", target=20,
    ),
    FigureSpec(
        "ws.broadcast_workers2_p99", "gateway",
        "broadcast event → each client, `--workers 2` gateway, p99", MS, "lower",
    ),
    # -- AI: I/O-bound tasks on the ai queue's own worker, and a real model -------------------
    FigureSpec(
        "ai.plain_wait_c8", "ai", "plain Celery prefork -c 8, tasks waiting 200 ms", TASKS,
    ),
    FigureSpec(
        "ai.ours_wait", "ai", "ours `worker -Q ai` (no pool flags), tasks waiting 200 ms",
        TASKS, baseline="ai.plain_wait_c8", target=400,
    ),
    FigureSpec(
        "ai.plain_own_io", "ai",
        "plain Celery -P threads -c 500, tasks waiting 200 ms + 2 Redis round trips", TASKS,
    ),
    FigureSpec(
        "ai.ours_own_io", "ai",
        "ours `worker -Q ai` (no pool flags), tasks waiting 200 ms + 2 Redis round trips",
        TASKS, baseline="ai.plain_own_io",
    ),
    FigureSpec(
        "ai.in_flight", "ai", "AI tasks in flight on one `worker -Q ai` (node answers in 1 s)",
        "tasks", target=500,
    ),
    FigureSpec(
        "ai.model_tokens", "ai", "SmolLM2 tokens/s at the WebSocket client, % of in-process",
        "%", target=95,
    ),
    FigureSpec(
        "ai.openai_tokens", "ai",
        "SmolLM2 on llama_cpp.server: tokens/s at the WebSocket client, % of direct", "%",
        target=95,
    ),
    FigureSpec(
        "ai.model_first_token", "ai", "SmolLM2 first token: model → WebSocket client", MS,
        "lower", target=20,
    ),
    # -- soak: Redis memory under sustained load (ignore_result no-ops, default settings) --------
    FigureSpec("soak.plain_rate", "soak", "plain Celery: tasks/s sustained in the soak", TASKS),
    FigureSpec(
        "soak.ours_rate", "soak", "ours: tasks/s sustained in the soak", TASKS,
        baseline="soak.plain_rate", target=2000,
    ),
    FigureSpec("soak.plain_peak", "soak", "plain Celery: Redis peak memory in the soak", "MB",
               "lower"),
    FigureSpec(
        "soak.ours_peak", "soak", "ours: Redis peak memory in the soak", "MB", "lower",
        baseline="soak.plain_peak",
    ),
    FigureSpec(
        "soak.plain_kept", "soak", "plain Celery: bytes kept per completed ignore_result task",
        "bytes", "lower",
    ),
    FigureSpec(
        "soak.ours_kept", "soak", "ours: bytes kept per completed ignore_result task", "bytes",
        "lower",
    ),
    FigureSpec(
        "soak.ours_growth", "soak", "ours: Redis memory growth, 30% of the soak to its end", "%",
        "lower", target=10,
    ),
    # -- Redis's own ceiling ---------------------------------------------------------------------
    FigureSpec("redis.set", "redis", "redis-benchmark SET, 50 clients", "ops/s"),
    FigureSpec("redis.lpush", "redis", "redis-benchmark LPUSH, 50 clients", "ops/s"),
    FigureSpec("redis.set_p16", "redis", "redis-benchmark SET, 50 clients, pipeline 16", "ops/s"),
    FigureSpec(
        "redis.lpush_p16", "redis", "redis-benchmark LPUSH, 50 clients, pipeline 16", "ops/s"
    ),
    FigureSpec("redis.set_c1", "redis", "redis-benchmark SET, 1 client, unpipelined", "ops/s"),
    FigureSpec("redis.lpush_c1", "redis", "redis-benchmark LPUSH, 1 client, unpipelined", "ops/s"),
    # -- replication: the send cost of MEETINGTASKS_MIN_REPLICAS, with one replica --------------
    FigureSpec(
        "replication.async", "replication",
        "ours: `task.delay()` with a replica, MIN_REPLICAS=0", TASKS,
    ),
    FigureSpec(
        "replication.min1", "replication",
        "ours: `task.delay()` with a replica, MIN_REPLICAS=1 (WAIT)", TASKS,
        baseline="replication.async",
    ),
    # -- redis-cost: Redis CPU and commands per task (send + run), from INFO, fresh Redis each -
    FigureSpec("cost.plain_ignored_us", "redis-cost",
               "plain Celery: Redis CPU per task, ignore_result", "µs", "lower"),
    FigureSpec("cost.ours_ignored_us", "redis-cost", "ours: Redis CPU per task, ignore_result",
               "µs", "lower", baseline="cost.plain_ignored_us", target=100),
    FigureSpec("cost.plain_kept_us", "redis-cost",
               "plain Celery: Redis CPU per task, small result kept", "µs", "lower"),
    FigureSpec("cost.ours_kept_us", "redis-cost", "ours: Redis CPU per task, small result kept",
               "µs", "lower", baseline="cost.plain_kept_us", target=100),
    FigureSpec("cost.plain_ignored_commands", "redis-cost",
               "plain Celery: Redis commands per task, ignore_result", "commands", "lower"),
    FigureSpec("cost.ours_ignored_commands", "redis-cost",
               "ours: Redis commands per task, ignore_result", "commands", "lower",
               baseline="cost.plain_ignored_commands"),
    FigureSpec("cost.plain_kept_commands", "redis-cost",
               "plain Celery: Redis commands per task, small result kept", "commands", "lower"),
    FigureSpec("cost.ours_kept_commands", "redis-cost",
               "ours: Redis commands per task, small result kept", "commands", "lower",
               baseline="cost.plain_kept_commands"),
    FigureSpec("cost.plain_ignored_ceiling", "redis-cost",
               "plain Celery: tasks/s one Redis core carries, ignore_result", TASKS),
    FigureSpec("cost.ours_ignored_ceiling", "redis-cost",
               "ours: tasks/s one Redis core carries, ignore_result", TASKS,
               baseline="cost.plain_ignored_ceiling", target=10000),
    FigureSpec("cost.plain_kept_ceiling", "redis-cost",
               "plain Celery: tasks/s one Redis core carries, small result kept", TASKS),
    FigureSpec("cost.ours_kept_ceiling", "redis-cost",
               "ours: tasks/s one Redis core carries, small result kept", TASKS,
               baseline="cost.plain_kept_ceiling", target=10000),
    FigureSpec("cost.plain_worker_us", "redis-cost",
               "plain Celery: worker CPU per no-op task (-c 2, main + pool, start-up included)",
               "µs", "lower"),
    FigureSpec("cost.ours_worker_us", "redis-cost",
               "ours: worker CPU per no-op task (-c 2, main + pool, start-up included)", "µs",
               "lower", baseline="cost.plain_worker_us", target=400),
    FigureSpec("cost.plain_worker_steady_us", "redis-cost",
               "plain Celery: worker CPU per no-op task, from its ready on", "µs", "lower"),
    FigureSpec("cost.ours_worker_steady_us", "redis-cost",
               "ours: worker CPU per no-op task, from its ready on", "µs", "lower",
               baseline="cost.plain_worker_steady_us", target=400),
    FigureSpec("cost.plain_sender_us", "redis-cost",
               "plain Celery: sender CPU per `delay()`, ignore_result", "µs", "lower"),
    FigureSpec("cost.ours_sender_us", "redis-cost",
               "ours: sender CPU per `delay()`, ignore_result, tracing off", "µs", "lower",
               baseline="cost.plain_sender_us"),
    FigureSpec("cost.ours_traced_sender_us", "redis-cost",
               "ours, tracing on (spans to a file): sender CPU per `delay()`", "µs", "lower",
               baseline="cost.ours_sender_us"),
    FigureSpec("cost.ours_traced_worker_us", "redis-cost",
               "ours, tracing on (spans to a file): worker CPU per no-op task", "µs", "lower",
               baseline="cost.ours_worker_us"),
    FigureSpec("cost.ours_traced_ignored_us", "redis-cost",
               "ours, tracing on: Redis CPU per task, ignore_result", "µs", "lower",
               baseline="cost.ours_ignored_us"),
    # -- poison: hostile messages among good tasks, two workers -------------------------------
    FigureSpec("poison.good_done", "poison", "good tasks done (of those sent)", "%", target=100),
    FigureSpec("poison.bad_set_aside", "poison", "hostile messages set aside with a reason", "%",
               target=100),
    FigureSpec("poison.workers_alive", "poison", "workers alive at the end", "%", target=100),
    FigureSpec("poison.seconds", "poison", "time to drain, from the workers' start", "s",
               "lower"),
)  # fmt: skip

SPEC_BY_KEY = {spec.key: spec for spec in SPECS}
GROUPS = (
    "dispatch", "worker", "latency", "gateway", "ai", "soak", "redis", "replication", "poison",
    "redis-cost",
)  # fmt: skip


@dataclass
class Figure:
    """One figure as found by a run."""

    key: str
    value: float | None = None
    status: Status = Status.NOT_MEASURED
    note: str = ""
    label: str | None = None  # overrides the declared label (e.g. the batch size)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> FigureSpec:
        return SPEC_BY_KEY[self.key]


@dataclass
class Results:
    environment: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)

    def set(
        self,
        key: str,
        value: float | None,
        status: Status = Status.MEASURED,
        note: str = "",
        **details: Any,
    ) -> None:
        if key not in SPEC_BY_KEY:
            raise KeyError(f"unknown figure {key!r}: declare it in bench/figures.py")
        if value is None and status in (Status.MEASURED, Status.PROVISIONAL):
            raise ValueError(f"figure {key} has no value: mark it not measured or failed")
        label = details.pop("label", None)
        self.figures[key] = Figure(key, value, status, note, label, details)

    def skip(self, keys: list[str] | tuple[str, ...], reason: str, failed: bool = False) -> None:
        """Mark figures as not measured (or failed), with the reason a reader sees."""
        status = Status.FAILED if failed else Status.NOT_MEASURED
        for key in keys:
            self.set(key, None, status, reason)

    def figure(self, key: str) -> Figure:
        return self.figures.get(key) or Figure(key, note="left out of this run (--only)")

    def ratio_to_baseline(self, key: str) -> float | None:
        spec = SPEC_BY_KEY[key]
        if spec.baseline is None:
            return None
        figure = self.figure(key)
        value, base = figure.value, self.figure(spec.baseline).value
        if value is None or not base:
            return None
        # Measured in turn with the baseline, round by round: the median of those ratios.
        paired = figure.details.get("ratio_median")
        return float(paired) if paired is not None else value / base

    def ratio_to_target(self, key: str) -> float | None:
        spec = SPEC_BY_KEY[key]
        value = self.figure(key).value
        if spec.target is None or value is None:
            return None
        return value / spec.target

    def meets_target(self, key: str) -> bool | None:
        spec = SPEC_BY_KEY[key]
        value = self.figure(key).value
        if spec.target is None or value is None:
            return None
        return value >= spec.target if spec.better == "higher" else value <= spec.target

    def to_json(self) -> dict[str, Any]:
        figures = {}
        for spec in SPECS:
            figure = self.figure(spec.key)
            figures[spec.key] = {
                **{k: v for k, v in asdict(spec).items() if k != "key"},
                "label": figure.label or spec.label,
                "value": figure.value,
                "status": str(figure.status),
                "note": figure.note,
                "ratio_to_plain_celery": self.ratio_to_baseline(spec.key),
                "ratio_to_target": self.ratio_to_target(spec.key),
                "meets_target": self.meets_target(spec.key),
                "details": figure.details,
            }
        return {"environment": self.environment, "config": self.config, "figures": figures}
