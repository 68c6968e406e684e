"""Percentiles and rates, the same way for every figure."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99/max/mean in milliseconds of latencies given in seconds."""
    if not seconds:
        return {"count": 0}
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3),
        "mean": round(sum(ms) / len(ms), 3),
    }


def completion_rate(times: Sequence[float]) -> dict[str, float]:
    """Steady-state rate of events at ``times`` (seconds): from first to last, and the
    middle 90 % (which also leaves out the ramp-up and the tail of a run)."""
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] <= ordered[0]:
        raise ValueError("need at least two distinct completion times")
    first_to_last = ordered[-1] - ordered[0]
    lo, hi = int(len(ordered) * 0.05), int(len(ordered) * 0.95) - 1
    middle = ordered[hi] - ordered[lo] if hi > lo else 0.0
    return {
        "rate": (len(ordered) - 1) / first_to_last,
        "seconds": first_to_last,
        "rate_middle_90": (hi - lo) / middle if middle > 0 else float("nan"),
    }
