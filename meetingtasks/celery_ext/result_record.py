"""Celery's result of a run, kept as fields of the task's status record.

Celery's Redis backend stores each result as a JSON string under its own key, beside
our status hash: two keys per task, saying the same things twice (state, dates, task
id). Here the result lives in the status record (``store/status.py``, its
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

from meetingtasks.policies.tracking import celery_state_of

#: Keys of Celery's meta that the record holds in fields of their own, or implies.
_OWN_KEYS = frozenset({"status", "result", "traceback", "children", "date_done", "task_id"})


def fields_of(meta: dict[str, Any], status: str | None, encode: Callable[[Any], str]) -> list[str]:
    """The record's result fields for Celery's ``meta`` of a run that moves the task
    to ``status`` (None: the status stays, as for STARTED), as field, value pairs."""
    fields = ["result", encode(meta["result"])]
    if meta["status"] != celery_state_of(status, meta["result"]):
        fields += ["state", meta["status"]]
    if meta.get("traceback"):
        fields += ["traceback", meta["traceback"]]
    if meta.get("children"):
        fields += ["children", encode(meta["children"])]
    extra = {key: value for key, value in meta.items() if key not in _OWN_KEYS}
    if extra:
        fields += ["meta", encode(extra)]
    return fields


def meta_of(
    task_id: str, record: dict[str, str], decode: Callable[[str], Any]
) -> dict[str, Any] | None:
    """Celery's meta from a status record, or None when it holds no result."""
    if "result" not in record:
        return None
    result = decode(record["result"])
    state = record.get("state") or celery_state_of(record.get("status"), result)
    done = state in states.READY_STATES and "updated_at" in record
    meta = {
        "status": state,
        "result": result,
        "traceback": record.get("traceback"),
        "children": decode(record["children"]) if "children" in record else [],
        "date_done": _iso(float(record["updated_at"])) if done else None,
        "task_id": task_id,
    }
    if "meta" in record:
        meta.update(decode(record["meta"]))
    return meta


def _iso(timestamp: float) -> str:
    """A date as Celery writes ``date_done``."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()
