"""Redis's own ceiling on this machine: ``redis-benchmark`` against the same private server.

Three shapes: 50 clients one command at a time (what many workers and clients do), the
same pipelined 16 deep (what batching can reach), and one client one command at a time
(the limit of a single publisher that waits for each reply, fsync included).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

#: figure key suffix -> extra redis-benchmark arguments
SHAPES = {"": [], "_p16": ["-P", "16"], "_c1": ["-c", "1"]}
TESTS = ("set", "lpush")


def parse_csv(text: str) -> dict[str, float]:
    """``redis-benchmark --csv`` output -> {test name in lower case: requests per second}."""
    rates = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("test") and row.get("rps"):
            rates[row["test"].lower()] = float(row["rps"])
    return rates


def run(port: int, n: int) -> dict[str, float]:
    """Figure key (``redis.set_p16`` …) -> ops/s."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise FileNotFoundError("redis-benchmark is not on PATH (it ships with redis-server)")
    figures = {}
    for suffix, extra in SHAPES.items():
        # One client waiting for every reply is slow: fewer requests keep it short.
        requests = n // 10 if suffix == "_c1" else n
        command = [
            binary, "-h", "127.0.0.1", "-p", str(port), "-t", ",".join(TESTS),
            "-n", str(requests), "--csv", *extra,
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        rates = parse_csv(out.stdout)
        for test in TESTS:
            if test not in rates:
                raise RuntimeError(f"redis-benchmark printed no {test} figure:\n{out.stdout}")
            figures[f"redis.{test}{suffix}"] = rates[test]
    return figures
