"""Our side of the Redis cost comparison: a user's own tasks, one whose result nobody
keeps and one that keeps a small result, as plain Celery's in ``bench/plain_app.py``.
Imported by the sending child and, with ``--include``, by the worker."""

from __future__ import annotations

from meetingtasks.app import app

IGNORED, KEPT = "bench.cost_ignored", "bench.cost_kept"


@app.task(name=IGNORED, ignore_result=True)
def cost_ignored() -> None:
    """Does nothing; its result is not kept."""


@app.task(name=KEPT)
def cost_kept() -> str:
    """Does nothing and keeps a small result."""
    return "ok"
