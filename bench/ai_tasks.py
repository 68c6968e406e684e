"""Our side of the I/O-bound comparison: ``bench.wait``, routed to the ``ai`` queue so its
worker runs that queue's own pool (``routes/ai.toml``). Imported by the sending child and,
with ``--include``, by the worker."""

from __future__ import annotations

import time

from bench.config import WAIT_SECONDS
from meetingtasks.app import app
from meetingtasks.policies.routing import Route, get_route_table

WAIT = "bench.wait"

get_route_table().register(Route(type=WAIT, queue="ai", max_retries=0, timeout=60))


@app.task(name=WAIT)
def wait() -> None:
    """Waits, as ``bench.wait`` of the plain app does."""
    time.sleep(WAIT_SECONDS)
