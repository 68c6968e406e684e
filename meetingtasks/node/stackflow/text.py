"""Text across a StackFlow unit manager, and the request lines that carry it.

StackFlow does not read its input as JSON all the way through:

- the unit manager cuts its TCP stream into messages by counting ``{`` and ``}``, in
  strings too: a lone ``}`` ends a message early and aborts it, a lone ``{`` swallows
  every message after it;
- a node cuts an inference's ``delta`` out of the line as the raw characters between
  its quotes, so an escape reaches the model as written (``\\n`` as a backslash and an
  ``n``), and the value ends at the first quote not preceded by a backslash, so a
  backslash at the end of a text runs the cut past its end.

So ``carry`` writes every character that framing carries as itself: letters of every
script, emoji, punctuation, and ``{``/``}`` where they pair up within the text. The
others cannot be carried as themselves and all go the same one way: as the six
characters ``\\uXXXX`` of their code point. They are the quote ``"``, the backslash, the
control characters U+0000 to U+001F (newline, tab, carriage return …), lone surrogates,
and a brace without its partner. A real JSON parser reads the line as the exact text
(the setup's system prompt is parsed so, and arrives exact); a node that cuts raw
substrings shows the model ``\\u0022`` for a quote and ``\\u000a`` for a newline, which
models read as the escape it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_CONTROL_LIMIT = 0x20


def unpaired_braces(text: str) -> set[int]:
    """Positions of the braces in ``text`` that have no partner: a ``}`` closes the
    nearest open ``{`` before it; what is left open, or closes nothing, is unpaired."""
    opened: list[int] = []
    unpaired: set[int] = set()
    for position, char in enumerate(text):
        if char == "{":
            opened.append(position)
        elif char == "}":
            if opened:
                opened.pop()
            else:
                unpaired.add(position)
    return unpaired | set(opened)


def _escaped(char: str) -> bool:
    code = ord(char)
    return char in '"\\' or code < _CONTROL_LIMIT or 0xD800 <= code <= 0xDFFF


def carry(text: str) -> str:
    """``text`` as a JSON string literal (quotes included) that a StackFlow unit manager
    carries intact; see the module docstring for what each character becomes."""
    unpaired = unpaired_braces(text)
    out = ['"']
    for position, char in enumerate(text):
        if _escaped(char) or position in unpaired:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def as_received(text: str) -> str:
    """What a node that cuts raw substrings hands its model for an inference ``text``."""
    return carry(text)[1:-1]


def request_line(message: Mapping[str, Any]) -> bytes:
    """One request as a UTF-8 line for the unit manager, every string written by ``carry``
    (so a JSON parser reads back exactly ``message``); keys keep their order."""
    return (_value(message) + "\n").encode()


def _value(value: Any) -> str:
    if isinstance(value, str):
        return carry(value)
    if isinstance(value, Mapping):
        items = (f"{carry(str(key))}:{_value(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(item) for item in value) + "]"
    return json.dumps(value)
