"""The service task modules: one per service queue, each task named by its type.

The handlers here are the platform's reference implementations; a service may define
its own tasks with ``@app.task`` and route them in routes/.
"""

from __future__ import annotations

from meetingtasks.errors import Permanent


def require_id(name: str, value: object) -> str:
    """A non-empty id of at most 128 characters, or a Permanent error (retrying won't help)."""
    if not isinstance(value, str) or not value or len(value) > 128:
        raise Permanent(f"{name} must be a non-empty string of at most 128 characters")
    return value
