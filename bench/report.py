"""The outputs of a run: results.json (everything), results.md (the table), results.png."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

from bench.figures import MS, SPECS, FigureSpec, Results, Status

#: The multiplication sign after ratios, as in 0.52 times.
TIMES = "\N{MULTIPLICATION SIGN}"
RATIO_NOTE = (
    f"{TIMES} plain Celery: our figure divided by plain Celery's equivalent on the same Redis and "
    "machine (for throughput above 1 is better, for latency below 1 is better). "
    "vs target: the figure divided by its target, ✓ when the target is met."
)


def write_all(results: Results, output_dir: Path, plot: bool = True) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = output_dir / "results.json"
    path.write_text(json.dumps(results.to_json(), indent=2, default=str) + "\n")
    written.append(path)
    path = output_dir / "results.md"
    path.write_text(markdown(results))
    written.append(path)
    if plot and write_plot(results, output_dir / "results.png"):
        written.append(output_dir / "results.png")
    return written


def environment_line(env: dict[str, Any]) -> str:
    parts = [
        f"{env.get('cpu_count')} CPUs",
        f"{env.get('memory_gib')} GiB",
        f"Python {env.get('python')}",
        f"Celery {env.get('celery')}",
        f"kombu {env.get('kombu')}",
        f"redis-py {env.get('redis_py')}",
        f"redis-server {env.get('redis_server')} (AOF appendfsync {env.get('appendfsync')})",
        str(env.get("date")),
        f"commit {str(env.get('git_commit'))[:10]}"
        + (" + uncommitted changes" if env.get("git_dirty") else ""),
    ]
    load = env.get("load_average_start"), env.get("load_average_end")
    if load[0] is not None:
        end = f" → {load[1][0]:.2f}" if load[1] else ""
        parts.append(f"load avg {load[0][0]:.2f}{end}")
    return " · ".join(parts)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == MS or unit == "KB":
        digits = 2 if value < 10 else 1 if value < 100 else 0
        return f"{value:,.{digits}f} {unit}"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def format_target(spec: FigureSpec) -> str:
    if spec.target is None:
        return "—"
    sign = "≥" if spec.better == "higher" else "≤"
    if spec.key in ("latency.ws_p50", "latency.ws_p99"):
        sign = "<"
    return f"{sign} {format_value(spec.target, spec.unit)}"


def markdown(results: Results) -> str:
    baselines = {spec.baseline for spec in SPECS if spec.baseline}
    lines = [
        "# meetingtasks benchmark",
        "",
        environment_line(results.environment),
        "",
        f"| figure | measured | {TIMES} plain Celery | target | vs target |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for spec in SPECS:
        figure = results.figure(spec.key)
        label = figure.label or spec.label
        if figure.value is None:
            lines.append(f"| {label} | {figure.status}: {figure.note or '—'} | — | "
                         f"{format_target(spec)} | — |")  # fmt: skip
            continue
        measured = format_value(figure.value, spec.unit)
        if figure.status is Status.PROVISIONAL:
            measured += " (provisional)"
            notes.append(f"{label}: provisional — {figure.note}")
        elif figure.note:
            notes.append(f"{label}: {figure.note}")
        ratio = results.ratio_to_baseline(spec.key)
        if ratio is not None:
            versus_plain = f"{ratio:.2f}{TIMES}"
        else:
            versus_plain = "baseline" if spec.key in baselines else "—"
        to_target, met = results.ratio_to_target(spec.key), results.meets_target(spec.key)
        versus_target = (
            "—" if to_target is None else f"{to_target:.2f}{TIMES} {'✓' if met else '✗'}"
        )
        lines.append(
            f"| {label} | {measured} | {versus_plain} | {format_target(spec)} | {versus_target} |"
        )
    lines += ["", RATIO_NOTE, "", sizes_line(results.config)]
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def sizes_line(config: dict[str, Any]) -> str:
    if not config:
        return ""
    return (
        f"Run: {'--quick' if config.get('quick') else 'default sizes'}; publish loops of "
        f"{config['publish_n']:,} tasks, {config['repeat']} rounds of plain and ours in turn "
        f"(the median; {TIMES} plain Celery: the median of the ratios within a round), batches of "
        f"{config['batch_size']:,}; worker runs drain {config['worker_n']:,} queued no-op tasks, "
        "timed from first to last completion; latency at "
        f"{config['rate']:g} submits/s for {config['duration']:g} s; "
        f"{config['connections']:,} WebSocket connections; redis-benchmark "
        f"-n {config['redis_n']:,}."
        + (" Publish loops ran under cProfile (slower)." if config.get("profile") else "")
    )


def write_plot(results: Results, path: Path) -> bool:
    """Bars of every measured figure (log scale), targets as red marks. False when
    matplotlib is missing (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("throughput (log scale)", [s for s in SPECS if s.unit in ("tasks/s", "ops/s")]),
        ("latency, ms (log scale)", [s for s in SPECS if s.unit == MS]),
    ]
    heights = [max(2.0, 0.38 * len(specs) + 1) for _, specs in panels]
    curves = {
        app: results.figure(f"soak.{app}_peak").details.get("series") for app in ("plain", "ours")
    }
    if any(curves.values()):
        heights.append(3.5)
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(11, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    if any(curves.values()):
        _memory_curves(axes[-1], curves)
    colours = {"dispatch": "#4c72b0", "worker": "#55a868", "latency": "#8172b2",
               "gateway": "#c44e52", "ai": "#da8bc3", "soak": "#8c8c8c",
               "redis": "#937860", "replication": "#ccb974"}  # fmt: skip
    for ax, (title, specs) in zip(axes, panels, strict=False):
        labels, values = [], []
        for i, spec in enumerate(specs):
            figure = results.figure(spec.key)
            label = figure.label or spec.label
            labels.append(label.replace("`", ""))
            value = figure.value
            values.append(value)
            if value is None or value <= 0:
                ax.text(0.01, i, f"{figure.status}", va="center", fontsize=8, color="grey",
                        transform=ax.get_yaxis_transform())  # fmt: skip
                continue
            ax.barh(
                i, value, color=colours.get(spec.group, "grey"),
                hatch="//" if figure.status is Status.PROVISIONAL else None,
            )  # fmt: skip
            ax.text(value, i, f" {format_value(value, spec.unit)}", va="center", fontsize=8)
            if spec.target is not None:
                ax.plot([spec.target], [i], marker="|", color="red", markersize=16, mew=2)
        measured = [v for v in values if v]
        ax.set_xscale("log")
        if measured:
            ax.set_xlim(min(measured) / 2, max([*measured, *_targets(specs)]) * 8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title + "   (red mark: target; hatched: provisional)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(textwrap.fill(environment_line(results.environment), 150), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _memory_curves(ax: Any, curves: dict[str, Any]) -> None:
    """Redis's used memory through the soak, plain Celery's and ours."""
    for app, series in curves.items():
        if series:
            seconds, used = zip(*series, strict=True)
            ax.plot([s / 60 for s in seconds], [u / 1_048_576 for u in used], label=app)
    ax.set_xlabel("minutes of the soak")
    ax.set_ylabel("Redis used memory, MB")
    ax.set_title("Redis memory under sustained load (ignore_result tasks)", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _targets(specs: list[FigureSpec]) -> list[float]:
    return [s.target for s in specs if s.target is not None and math.isfinite(s.target)]
