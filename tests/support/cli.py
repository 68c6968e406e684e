"""The ``meetingtasks`` command line, run as a user would, in its own process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateways import REPO


def meetingtasks_cli(
    *args: str, redis_url: str | None = None, timeout: float = 120, **settings: str
) -> subprocess.CompletedProcess[str]:
    """``python -m meetingtasks ARGS``: on ``redis_url`` (else the tests' Redis), with
    ``settings`` as environment variables, wide enough that tables do not wrap."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **settings}
    if redis_url is not None:
        env["MEETINGTASKS_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "meetingtasks", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
