"""Celery's result of a run, kept as fields of the task's status record.

Celery's Redis backend stores each result as a JSON string under its own key, beside
our status hash: two keys per task, saying the same things twice (state, dates, task
id). Here the result lives in the task's record (``base/record.py``, its
``RESULT_FIELDS``), with only what the record does not already say:

- ``result``: the encoded value (a failure's exception in Celery's JSON form); its
  presence is what tells a stored result from a task whose result is ignored;
- ``state``: Celery's state, only where our status does not imply it (STARTED, a
  custom ``update_state``, a timeout that was a revocation);
- ``traceback``, ``children``: only when there are some;
- ``meta``: what else Celery's meta carries (group and parent ids, the extended
  result), only when there is any.

Celery's ``date_done`` is the record's ``updated_at``, its ``task_id`` the record's id.
The result backend (``backend.py``) rebuilds Celery's meta from these fields on read,
so ``AsyncResult`` and everything else of Celery's sees its usual meta.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import states

from meetingtasks.base.record import RecordField, TaskRecord
from meetingtasks.policies.tracking import celery_state_of

#: Keys of Celery's meta that the record holds in fields of their own, or implies.
_OWN_KEYS = frozenset({"status", "result", "traceback", "children", "date_done", "task_id"})


def fields_of(meta: dict[str, Any], status: str | None, encode: Callable[[Any], str]) -> list[str]:
    """The record's result fields for Celery's ``meta`` of a run that moves the task
    to ``status`` (None: the status stays, as for STARTED), as field, value pairs."""
    fields = [RecordField.RESULT.value, encode(meta["result"])]
    if meta["status"] != celery_state_of(status, meta["result"]):
        fields += [RecordField.STATE.value, meta["status"]]
    if meta.get("traceback"):
        fields += [RecordField.TRACEBACK.value, meta["traceback"]]
    if meta.get("children"):
        fields += [RecordField.CHILDREN.value, encode(meta["children"])]
    extra = {key: value for key, value in meta.items() if key not in _OWN_KEYS}
    if extra:
        fields += [RecordField.META.value, encode(extra)]
    return fields


def meta_of(record: TaskRecord, decode: Callable[[str], Any]) -> dict[str, Any] | None:
    """Celery's meta from a task's record, or None when it holds no result."""
    encoded = record.get(RecordField.RESULT)
    if encoded is None:
        return None
    result = decode(encoded)
    state = record.get(RecordField.STATE) or celery_state_of(record.get(RecordField.STATUS), result)
    done_at = record.time(RecordField.UPDATED_AT)
    children, extra = record.get(RecordField.CHILDREN), record.get(RecordField.META)
    meta = {
        "status": state,
        "result": result,
        "traceback": record.get(RecordField.TRACEBACK),
        "children": decode(children) if children is not None else [],
        "date_done": _iso(done_at) if done_at and state in states.READY_STATES else None,
        "task_id": record.task_id,
    }
    if extra is not None:
        meta.update(decode(extra))
    return meta


def _iso(timestamp: float) -> str:
    """A date as Celery writes ``date_done``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()
