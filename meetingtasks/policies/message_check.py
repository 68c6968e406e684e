"""Whether a message taken from a queue can become a task request, checked before Celery
sees it.

Celery's worker decodes what the transport hands it in its main process, and several
decode errors escape its handlers and stop the whole consumer ("Unrecoverable error",
celery#4308, #7975): a body that is not base64, a body that is not ``[args, kwargs,
embed]``, a kombu type tag that fails, bytes that are not UTF-8, a number beyond a
double. Others are handled by Celery but leave the message in no list with its status
never final: an untrusted content type, a body that does not decode. And the next worker
on the queue takes the same message and dies the same way.

So every message is checked here first, the way Celery will read it (kombu's decoders,
the app's accepted content types), and one that cannot run comes back as ``Refused``
with the reason; the transport sets it aside (``store/malformed.py``) and the messages
fetched beside it run. The checks cost a few microseconds for a usual message: Celery
decodes the body in the main process anyway.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from celery.utils.time import maybe_iso8601
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import loads as kombu_loads
from kombu.utils.json import loads as kombu_json

from meetingtasks.errors import ValidationError


@dataclass(frozen=True)
class Refused:
    """A message that cannot become a task, why, and what of it could still be read."""

    reason: str
    task_id: str | None = None
    delivery_tag: str | None = None


class _Bad(ValidationError):
    """Raised by a check: the message is refused for this reason (never leaves here)."""


def decode_envelope(raw: bytes | str) -> Any:
    """A queued envelope as JSON: orjson (kombu's decoder, with its hook for every object,
    took a tenth of a worker's main process), or kombu's where kombu encoded a type of its
    own (``__type__``) somewhere inside. Raises ``ValueError`` (with the reason) for text
    that is not UTF-8 or not JSON, a number beyond a double, a type tag that fails."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if '"__type__"' in text:
        return kombu_json(text)
    return orjson.loads(text)


def check(raw: bytes | str, accept: Collection[str]) -> dict[str, Any] | Refused:
    """The envelope of ``raw`` if Celery can make a task request of it, else why not.

    ``accept`` holds the content types the app accepts (MIME types, as kombu compares
    them)."""
    try:
        envelope = decode_envelope(raw)
    except UnicodeDecodeError as exc:
        return Refused(f"the message is not UTF-8 text ({exc})", *_ids_read_leniently(raw))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = f"the message is not JSON that kombu can read ({exc})"
        return Refused(reason, *_ids_read_leniently(raw))
    if not isinstance(envelope, dict):
        return Refused(f"the message is a JSON {type(envelope).__name__}, not an object")
    headers = envelope.get("headers")
    properties = envelope.get("properties")
    task_id = _string_or_none(headers, "id")
    tag = _string_or_none(properties, "delivery_tag")
    try:
        _check_body(envelope, _check_envelope(envelope, headers, properties), accept)
    except _Bad as bad:
        return Refused(str(bad), task_id, tag)
    return envelope


def _ids_read_leniently(raw: bytes | str) -> tuple[str | None, str | None]:
    """(task id, delivery tag) of an envelope Celery cannot read, read as leniently as
    Python's own decoder allows (bad bytes replaced, no type tags, infinite numbers), so
    that its task's status can still end: ``(None, None)`` when even that fails."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        envelope = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(envelope, dict):
        return None, None
    return (
        _string_or_none(envelope.get("headers"), "id"),
        _string_or_none(envelope.get("properties"), "delivery_tag"),
    )


def _string_or_none(mapping: Any, key: str) -> str | None:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, str) and value else None


def _check_envelope(envelope: dict[str, Any], headers: Any, properties: Any) -> dict[str, Any]:
    """The properties, once the envelope around the body is one Celery reads."""
    if not isinstance(properties, dict):
        raise _Bad("the message has no properties object")
    if not isinstance(properties.get("delivery_tag"), str):
        raise _Bad("properties.delivery_tag is not a string")
    for name in ("delivery_info",):
        if properties.get(name) is not None and not isinstance(properties[name], dict):
            raise _Bad(f"properties.{name} is not an object")
    for name in ("correlation_id", "reply_to"):
        if properties.get(name) is not None and not isinstance(properties[name], str):
            raise _Bad(f"properties.{name} is not a string")
    priority = properties.get("priority")
    if priority is not None and (type(priority) is not int or not 0 <= priority <= 255):
        raise _Bad(f"properties.priority {priority!r} is not a number from 0 to 255")
    if not isinstance(headers, dict):
        raise _Bad("the message has no headers object")
    for name in ("id", "task"):
        if not isinstance(headers.get(name), str) or not headers[name]:
            raise _Bad(
                f"headers.{name} is missing or not a string: not a task message of Celery's "
                "protocol 2 (protocol 1 is not taken)"
            )
    retries = headers.get("retries")
    if retries is not None and type(retries) is not int:
        raise _Bad("headers.retries is not a whole number")
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(v is None or type(v) in (int, float) for v in limits)
    ):
        raise _Bad("headers.timelimit is not [hard, soft] seconds")
    for name in ("eta", "expires"):
        value = headers.get(name)
        if value is not None:
            try:
                maybe_iso8601(value)
            except (TypeError, ValueError, AttributeError):
                raise _Bad(f"headers.{name} {value!r:.80} is not an ISO 8601 time") from None
    for name in ("content-type", "content-encoding"):
        if envelope.get(name) is not None and not isinstance(envelope[name], str):
            raise _Bad(f"{name} is not a string")
    return properties


def _check_body(
    envelope: dict[str, Any], properties: dict[str, Any], accept: Collection[str]
) -> None:
    body = envelope.get("body")
    if not isinstance(body, str):
        raise _Bad("the body is not a string")
    encoding = properties.get("body_encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise _Bad("properties.body_encoding is not a string")
    data: bytes | str = body
    if encoding and encoding.lower() == "base64":
        try:
            data = base64.b64decode(body.encode())  # as kombu decodes it (not strict)
        except (binascii.Error, ValueError) as exc:
            raise _Bad(f"the body is not base64 ({exc})") from None
    elif encoding and encoding.lower() != "utf-8":
        raise _Bad(f"body_encoding {encoding!r} is not one kombu decodes (base64)")
    content_type = envelope.get("content-type") or "application/data"
    content_encoding = envelope.get("content-encoding") or "utf-8"
    try:
        codecs.lookup(content_encoding)
    except LookupError:
        if content_encoding not in ("binary", "ascii-8bit"):
            raise _Bad(f"content-encoding {content_encoding!r} is unknown") from None
    try:
        payload = kombu_loads(data, content_type, content_encoding, accept=accept)
    except ContentDisallowed as exc:
        raise _Bad(f"content type refused: {exc}") from None
    except (DecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise _Bad(f"the body does not decode as {content_type} ({exc})") from None
    if not (
        isinstance(payload, list | tuple)
        and len(payload) == 3
        and isinstance(payload[0], list | tuple)
        and isinstance(payload[1], dict)
        and (payload[2] is None or isinstance(payload[2], dict))
    ):
        raise _Bad("the body is not [args, kwargs, embed] (Celery's protocol 2)")
