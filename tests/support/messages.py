"""Reading what the app put in Redis: kombu envelopes, and the events published."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from meetingtasks.base.keys import get_keys


def decoded(raw: str) -> dict:
    """A kombu envelope (task message or event) with its base64 JSON body decoded."""
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def published(redis, send: Callable[[], Any], routing_key: str = "task.sent") -> list[dict]:
    """The monitoring events (envelopes, with their channel) whose routing key matches
    ``routing_key`` (a glob), published while ``send()`` runs."""
    pubsub = redis.pubsub()
    pubsub.psubscribe(f"{get_keys().prefix}*celeryev/{routing_key}")
    pubsub.get_message(timeout=5)  # the subscription itself
    send()
    events = []
    while (message := pubsub.get_message(timeout=1)) is not None:
        if message["type"] == "pmessage":
            events.append({**decoded(message["data"]), "channel": message["channel"]})
    pubsub.close()
    return events
