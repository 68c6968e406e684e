"""Housekeeping tasks (queue ``default``), mostly sent delayed and at LOW priority."""

from __future__ import annotations

from meetingtasks.app import app
from meetingtasks.base.keys import get_keys
from meetingtasks.store import get_redis
from meetingtasks.tasks import require_id


@app.task(name="maintenance.cleanup_meeting")
def cleanup_meeting(meeting_id: str) -> int:
    """Remove what is left of a closed meeting's state; returns the keys removed."""
    keys = get_keys()
    require_id("meeting_id", meeting_id)
    return int(get_redis().delete(keys.participants(meeting_id), keys.streams(meeting_id)))


@app.task(name="system.noop")
def noop() -> None:
    """Does nothing: measures the cost of the task system itself (benchmarks, health checks)."""


@app.task(name="system.echo")
def echo(value: object = None) -> object:
    """Returns its argument: a round trip through queue, worker and result backend."""
    return value
