"""Sizes of one benchmark run: ``--quick`` (a minute or two) or the default (a few minutes)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bench.figures import GROUPS

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Seconds the I/O-bound benchmark task (``bench.wait``) waits, as an AI call mostly does.
WAIT_SECONDS = 0.2


@dataclass(frozen=True)
class BenchConfig:
    #: Tasks published per timed loop, and how many rounds of loops, plain and ours in
    #: turn (the median is reported).
    publish_n: int = 10_000
    repeat: int = 5
    #: Requests per ``dispatch_batch`` call.
    batch_size: int = 1_000
    #: Tasks queued before each worker run, drained by the worker.
    worker_n: int = 20_000
    #: Submit -> result latency: submits per second and for how many seconds.
    rate: float = 200.0
    duration: float = 20.0
    #: WebSocket: idle connections, LLM prompts, broadcast rounds.
    connections: int = 10_000
    llm_samples: int = 20
    broadcast_rounds: int = 10
    #: Tasks waiting 200 ms drained by plain Celery -c 8 and by our ai worker; AI tasks
    #: sent at once to one ai worker; real-model prompts (each path).
    wait_n_plain: int = 400
    wait_n: int = 4_000
    in_flight_n: int = 2_000
    #: Tasks waiting 200 ms then making two Redis round trips of their own, drained by
    #: plain Celery -P threads -c 500 and by our ai worker in turn.
    own_io_n: int = 2_000
    model_rounds: int = 5
    #: The soak: tasks/s aimed at and seconds sent (ours; plain Celery for 30% of it:
    #: neither keeps growing after the first minute, so its peak shows by then).
    soak_rate: int = 2_000
    soak_seconds: int = 600
    #: Requests per redis-benchmark test.
    redis_n: int = 200_000
    #: Foreign messages pushed one at a time on an inbox (the pickup latency).
    foreign_n: int = 200
    #: Tasks sent then drained per Redis cost measurement, and rounds of each (the median).
    cost_n: int = 10_000
    cost_rounds: int = 3
    #: Poison: good tasks, and hostile messages pushed among them.
    poison_good: int = 10_000
    poison_bad: int = 1_000
    #: The private Redis's AOF fsync policy: ``always`` is what compose.yaml and the
    #: embedded Redis run, so it is the default here too.
    appendfsync: str = "always"
    groups: tuple[str, ...] = GROUPS
    profile: bool = False
    plot: bool = True
    output_dir: Path = BENCH_DIR
    quick: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "output_dir": str(self.output_dir), "groups": list(self.groups)}


QUICK = BenchConfig(
    publish_n=2_000,
    repeat=1,
    batch_size=500,
    worker_n=3_000,
    rate=100.0,
    duration=5.0,
    connections=1_000,
    llm_samples=5,
    broadcast_rounds=5,
    wait_n_plain=160,
    wait_n=1_500,
    in_flight_n=1_000,
    own_io_n=1_000,
    model_rounds=2,
    soak_seconds=60,
    redis_n=50_000,
    foreign_n=50,
    cost_n=3_000,
    cost_rounds=1,
    poison_good=2_000,
    poison_bad=200,
    quick=True,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark meetingtasks beside plain Celery and Redis's own limit, on a "
        "private redis-server. Writes results.json, results.md and results.png.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a minute or two")
    p.add_argument(
        "--only",
        help=f"comma-separated groups to run, of: {','.join(GROUPS)} (default: all)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the in-process publish loops under cProfile; writes profile-<name>.txt",
    )
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip results.png")
    p.add_argument("--output-dir", type=Path, help=f"where results go (default {BENCH_DIR})")
    p.add_argument(
        "--appendfsync",
        choices=("always", "everysec", "no"),
        help="AOF fsync policy of the private Redis (default always, as deployed)",
    )
    sizes = p.add_argument_group("sizes (override --quick or the defaults)")
    for name, help_text in (
        ("publish_n", "tasks per timed publish loop"),
        ("repeat", "timed publish loops (median reported)"),
        ("batch_size", "requests per dispatch_batch call"),
        ("worker_n", "tasks drained per worker run"),
        ("rate", "submits per second in latency runs"),
        ("duration", "seconds of each latency run"),
        ("connections", "idle WebSocket connections"),
        ("llm_samples", "LLM prompts for the time to first delta"),
        ("broadcast_rounds", "broadcast events sent to the idle connections"),
        ("wait_n_plain", "200 ms tasks drained by plain Celery -c 8"),
        ("wait_n", "200 ms tasks drained by our ai worker"),
        ("in_flight_n", "AI tasks sent at once to one ai worker"),
        ("own_io_n", "200 ms tasks with two Redis round trips of their own, per worker"),
        ("model_rounds", "real-model prompts per path"),
        ("soak_rate", "tasks/s the soak aims at"),
        ("soak_seconds", "seconds the soak sends (ours; plain Celery 30%% of it)"),
        ("redis_n", "requests per redis-benchmark test"),
        ("foreign_n", "foreign messages pushed on an inbox, one at a time"),
        ("cost_n", "tasks sent and drained per Redis cost measurement"),
        ("cost_rounds", "rounds of the Redis cost measurements (median reported)"),
        ("poison_good", "good tasks of the poison run"),
        ("poison_bad", "hostile messages pushed among them"),
    ):
        kind = float if name in ("rate", "duration") else int
        sizes.add_argument(f"--{name.replace('_', '-')}", type=kind, help=help_text)
    return p


def from_args(argv: list[str] | None = None) -> BenchConfig:
    args = parser().parse_args(argv)
    config = QUICK if args.quick else BenchConfig()
    overrides: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in fields(BenchConfig)
        if getattr(args, f.name, None) is not None
        and f.name not in ("quick", "groups", "plot", "profile")
    }
    if args.only:
        groups = tuple(g.strip() for g in args.only.split(",") if g.strip())
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown:
            parser().error(f"unknown group(s) {', '.join(unknown)}; choose from {GROUPS}")
        overrides["groups"] = groups
    for name, value in overrides.items():
        if isinstance(value, int | float) and value <= 0:
            parser().error(f"--{name.replace('_', '-')} must be positive")
    return replace(config, **overrides, profile=args.profile, plot=args.plot)
