"""The rules for event channel names (and consumer names), which settings check too.

Channels are namespaced like keys (``meetingtasks.base.keys``); a pattern (with ``*``,
``?``, ``[``) may only be subscribed to.
"""

from __future__ import annotations

import re

from meetingtasks.errors import InvalidEvent

_CHANNEL = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?\[\]-]{1,200}$")
_WILDCARDS = frozenset("*?[")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_channel(channel: str, *, allow_pattern: bool = False) -> bool:
    """Check a channel name (or, where allowed, a glob pattern); True if it is a pattern."""
    if not isinstance(channel, str):
        raise InvalidEvent(f"channel must be a string, not {type(channel).__name__}")
    is_pattern = any(char in _WILDCARDS for char in channel)
    if is_pattern and not allow_pattern:
        raise InvalidEvent(
            f"channel {channel!r} has a wildcard: publish to one concrete channel "
            "(patterns are for subscribe)"
        )
    if not (_PATTERN if is_pattern else _CHANNEL).match(channel):
        raise InvalidEvent(
            f"bad channel name {channel!r}: use 1-200 letters, digits, '.', '_', '-' or ':'"
            + (" (and * ? [ ] in a pattern)" if allow_pattern else "")
        )
    return is_pattern


def validate_name(what: str, name: str) -> str:
    """Consumer group and consumer names: plain tokens, shown as-is by XINFO."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidEvent(
            f"bad {what} name {name!r}: use 1-128 letters, digits, '.', '_', '-' or ':'"
        )
    return name
