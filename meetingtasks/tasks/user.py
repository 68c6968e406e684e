"""User service tasks: presence (queue ``user``)."""

from __future__ import annotations

from meetingtasks.app import app
from meetingtasks.base.keys import get_keys
from meetingtasks.errors import Permanent
from meetingtasks.store import get_redis
from meetingtasks.tasks import require_id

PRESENCE_STATES = ("online", "away", "busy", "offline")


@app.task(name="user.set_presence")
def set_presence(user_id: str, status: str, ttl: int = 300) -> str:
    """Set a user's presence for ``ttl`` seconds (it lapses unless refreshed)."""
    if status not in PRESENCE_STATES:
        raise Permanent(f"presence must be one of {', '.join(PRESENCE_STATES)}, not {status!r}")
    if not isinstance(ttl, int) or not 1 <= ttl <= 86400:
        raise Permanent("ttl must be a whole number of seconds from 1 to 86400")
    get_redis().set(get_keys().presence(require_id("user_id", user_id)), status, ex=ttl)
    return status
