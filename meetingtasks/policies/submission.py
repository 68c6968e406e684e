"""Checks and per-message options every task submission goes through.

Every way of sending a task (``delay``, ``apply_async``, ``send_task``, retries,
canvas, the dispatcher) ends in the one send path (``sending.py``), which calls these,
so bad input is refused the same way everywhere, before anything is queued. The limits
they check are read from the settings once, by the send path (``Limits``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from kombu.utils.json import JSONEncoder

from meetingtasks.base import headers as h
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import Settings
from meetingtasks.errors import InvalidOption, InvalidPayload

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_IDEMPOTENCY_KEY = 200

#: kombu's JSON encoder, as kombu's ``dumps`` makes one per call (its output, the body a
#: worker decodes; one instance spares a tenth of a send's checks).
_ENCODER = JSONEncoder()
#: A UTF-16 surrogate escape (backslash-u-d8..df) in JSON text; a lone one is not Unicode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Limits:
    """What a submission may be: the payload's size, and the grace between a run's
    timeout and its hard time limit."""

    max_payload_bytes: int
    timeout_grace: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_payload_bytes, settings.timeout_grace)


class Payload(NamedTuple):
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: ``[args, kwargs]`` as the message body will carry them (kombu's JSON).
    json: str


def check_payload(task: Any, name: str, args: Any, kwargs: Any, limits: Limits) -> Payload:
    """Arguments that are JSON, within the size limit, and fit the task's signature."""
    if args is not None and not isinstance(args, list | tuple):
        raise InvalidPayload(f"args of {name} must be a list, not {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        kind = type(kwargs).__name__
        raise InvalidPayload(f"payload of {name} must be a JSON object, not {kind}")
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    try:
        text = _ENCODER.encode([args, kwargs])
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(f"payload of {name} is not JSON-serialisable: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(name, [args, kwargs])
    size = len(text.encode())
    limit = limits.max_payload_bytes
    if size > limit:
        raise InvalidPayload(
            f"payload of {name} is {size} bytes, over the {limit}-byte limit "
            "(MEETINGTASKS_MAX_PAYLOAD_BYTES); pass a reference to large data instead"
        )
    header = getattr(task, "__header__", None)
    if header is not None:
        try:
            header(*args, **kwargs)
        except TypeError as exc:
            raise InvalidPayload(f"payload does not fit task {name}: {exc}") from exc
    return Payload(args, kwargs, text)


def _refuse_lone_surrogates(name: str, payload: Any) -> None:
    """Python strings may hold lone surrogates (e.g. from ``"\\udc80"`` in JSON); they are
    not Unicode text, so nothing downstream (Redis's Lua JSON, other languages) can read
    them. Pairs (emoji escaped by ``ensure_ascii``) encode fine and pass."""
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPayload(
            f"payload of {name} holds a lone UTF-16 surrogate, which is not valid Unicode text"
        ) from exc


def apply_options(options: dict[str, Any], limits: Limits) -> None:
    """Check and translate our per-message options in place (see MeetingTasksApp)."""
    now = time.time()
    priority = options.get("priority")
    if priority is not None:
        options["priority"] = int(Priority.parse(priority))
    serializer = options.get("serializer")
    if serializer not in (None, "json"):
        raise InvalidOption(f"serializer {serializer!r} refused: meetingtasks sends JSON only")
    headers = {**(options.get("headers") or {}), h.ENQUEUED_AT: now}
    due = _due_time(options.get("eta"), options.get("countdown"), now)
    if due is not None:
        headers[h.DUE_AT] = due
    timeout = options.pop("timeout", None)
    if timeout is not None:
        if not _positive_number(timeout):
            raise InvalidOption(f"timeout must be a positive number of seconds, not {timeout!r}")
        options["soft_time_limit"] = timeout
        options["time_limit"] = hard_limit(timeout, limits.timeout_grace)
    max_retries = options.pop("max_retries", None)
    if max_retries is not None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidOption(f"max_retries must be a whole number >= 0, not {max_retries!r}")
        headers[h.MAX_RETRIES] = max_retries
    retention = options.pop("retention", None)
    if retention is not None:
        if not _positive_number(retention):
            raise InvalidOption(
                f"retention must be a positive number of seconds, not {retention!r}"
            )
        headers[h.RETENTION] = retention
    expires = options.get("expires")
    if isinstance(expires, str | datetime):
        parse_datetime(expires, "expires")
    elif expires is not None and not _positive_number(expires):
        raise InvalidOption(f"expires must be positive seconds or a datetime, not {expires!r}")
    options["headers"] = headers


def hard_limit(timeout: float, grace: float) -> float:
    """The hard time limit of a run whose (soft) timeout is ``timeout``: the ``grace``
    between them lets the task clean up before its process is killed."""
    return timeout + grace


def check_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidOption(
            "idempotency_key must be a non-empty string of at most "
            f"{MAX_IDEMPOTENCY_KEY} characters"
        )
    return key


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def parse_datetime(value: Any, option: str) -> datetime:
    """A datetime or ISO 8601 string as an aware datetime (naive ones are UTC)."""
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else value
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        when.timestamp()
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidOption(
            f"{option} must be a datetime or ISO 8601 string, not {value!r}"
        ) from exc
    return when


def _due_time(eta: Any, countdown: Any, now: float) -> float | None:
    """Unix time a delayed message becomes runnable, from Celery's eta or countdown."""
    if eta is not None:
        due = parse_datetime(eta, "eta").timestamp()
    elif countdown is not None:
        if not isinstance(countdown, int | float) or isinstance(countdown, bool) or countdown < 0:
            raise InvalidOption(f"countdown must be seconds >= 0, not {countdown!r}")
        due = now + float(countdown)
    else:
        return None
    if due - now > MAX_DELAY_SECONDS:
        raise InvalidOption("a task may be delayed by one year at most")
    return due
