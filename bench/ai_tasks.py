"""Our side of the I/O-bound comparisons: ``bench.wait`` and ``bench.own_io``, routed to
the ``ai`` queue so its worker runs that queue's own pool (``routes/ai.toml``). Imported by
the sending child and, with ``--include``, by the worker."""

from __future__ import annotations

import time

from bench.config import WAIT_SECONDS
from bench.own_io import OWN_IO, own_io_work
from meetingtasks.app import app
from meetingtasks.base.settings import get_settings
from meetingtasks.policies.routing import Route, get_route_table

WAIT = "bench.wait"

get_route_table().register(Route(type=WAIT, queue="ai", max_retries=0, timeout=60))
get_route_table().register(Route(type=OWN_IO, queue="ai", max_retries=0, timeout=60))


@app.task(name=WAIT)
def wait() -> None:
    """Waits, as ``bench.wait`` of the plain app does."""
    time.sleep(WAIT_SECONDS)


@app.task(name=OWN_IO)
def own_io() -> None:
    """Waits, then two round trips of its own, as ``bench.own_io`` of the plain app does."""
    own_io_work(get_settings().redis_url)
