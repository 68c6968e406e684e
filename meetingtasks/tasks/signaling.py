"""Signaling tasks: WebRTC offers, answers and ICE candidates (queue ``signaling``)."""

from __future__ import annotations

import json
from typing import Any

from meetingtasks.app import app
from meetingtasks.base.keys import get_keys
from meetingtasks.errors import Permanent
from meetingtasks.store import get_redis
from meetingtasks.tasks import require_id

SIGNAL_KINDS = ("offer", "answer", "candidate", "bye")


@app.task(name="signaling.relay")
def relay(from_user: str, to_user: str, kind: str, body: dict[str, Any]) -> int:
    """Publish a signaling message on the addressee's channel; returns how many listeners got it."""
    if kind not in SIGNAL_KINDS:
        raise Permanent(f"signal kind must be one of {', '.join(SIGNAL_KINDS)}, not {kind!r}")
    message = json.dumps({"from": require_id("from_user", from_user), "kind": kind, "body": body})
    return int(
        get_redis().publish(get_keys().user_channel(require_id("to_user", to_user)), message)
    )
