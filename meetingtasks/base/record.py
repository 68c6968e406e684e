"""The task's record: one Redis hash per task (``Keys.status``), and the one place its
fields are named.

Who writes what:

    store/queueing.py → lua/enqueue.lua   status (queued or scheduled), created_at,
                                          type, priority, queue, and the client links
                                          a message's headers carry (``FROM_HEADERS``)
    lua/fetch.lua                         status processing, started_at, attempts,
                                          worker; status cancelled and updated_at for
                                          a cancelled task it drops
    store/status.py → lua/finish.lua      status, updated_at, error, and Celery's
                                          result (``RESULT_FIELDS``,
                                          ``celery_ext/result_record.py``)
    store/status.py                       worker_lost (a pool process died under it)

Python reads a record through ``TaskRecord``. Lua names each field ``F.<field>``, which
the store replaces by the name ``RecordField`` gives it as it loads the script
(``store.script``), so no script spells a field itself (``tests/test_record.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from meetingtasks.base import headers as h
from meetingtasks.base.status import TaskStatus


class RecordField(StrEnum):
    STATUS = "status"
    TYPE = "type"
    PRIORITY = "priority"
    QUEUE = "queue"
    CREATED_AT = "created_at"
    STARTED_AT = "started_at"
    UPDATED_AT = "updated_at"
    ATTEMPTS = "attempts"
    WORKER = "worker"
    ERROR = "error"
    WORKER_LOST = "worker_lost"
    # The client links: who submitted it, who waits for it, how long it is kept.
    SESSION = "session"
    REQUEST = "request_id"
    USER = "user"
    MEETING = "meeting"
    NOTIFY = "notify"
    RETENTION = "retention"
    FOREIGN = "foreign"
    # Celery's result of a run (celery_ext/result_record.py says what each holds).
    RESULT = "result"
    STATE = "state"
    TRACEBACK = "traceback"
    CHILDREN = "children"
    META = "meta"


#: The fields that hold Celery's result of a run: a new result replaces them all.
RESULT_FIELDS = (
    RecordField.RESULT,
    RecordField.STATE,
    RecordField.TRACEBACK,
    RecordField.CHILDREN,
    RecordField.META,
)

#: Fields copied from a message's headers when present. (The channels of a session and
#: of a dispatcher are derived from their ids.)
FROM_HEADERS = (
    (RecordField.SESSION, h.SESSION),
    (RecordField.REQUEST, h.REQUEST),
    (RecordField.USER, h.USER),
    (RecordField.MEETING, h.MEETING),
    (RecordField.NOTIFY, h.NOTIFY),
    (RecordField.RETENTION, h.RETENTION),
    (RecordField.FOREIGN, h.FOREIGN),
)


def with_field_names(lua: str) -> str:
    """A Lua script's text with each ``F.<name>`` replaced by that field's name, quoted,
    as the store loads it: named here, spelled once, and nothing built at run time."""

    def name(match: re.Match[str]) -> str:
        try:
            return f"'{RecordField(match.group(1)).value}'"
        except ValueError:
            raise ValueError(
                f"a Lua script names F.{match.group(1)}, no field of the record"
            ) from None

    return _LUA_FIELD.sub(name, lua)


#: ``F.<name>`` in a Lua script.
_LUA_FIELD = re.compile(r"\bF\.(\w+)")


@dataclass(frozen=True)
class TaskRecord:
    """A task's record as read (``HGETALL``); absent fields are None."""

    task_id: str
    fields: dict[str, str]

    def get(self, field: RecordField) -> str | None:
        return self.fields.get(field)

    @property
    def exists(self) -> bool:
        return bool(self.fields)

    @property
    def status(self) -> TaskStatus | None:
        value = self.fields.get(RecordField.STATUS)
        return TaskStatus(value) if value else None

    @property
    def type(self) -> str | None:
        return self.fields.get(RecordField.TYPE)

    @property
    def priority(self) -> int | None:
        value = self.fields.get(RecordField.PRIORITY)
        return int(value) if value not in (None, "") else None

    @property
    def attempts(self) -> int:
        return int(self.fields.get(RecordField.ATTEMPTS) or 0)

    @property
    def has_result(self) -> bool:
        """A stored result, as opposed to a task whose result is ignored."""
        return RecordField.RESULT in self.fields

    def time(self, field: RecordField) -> float | None:
        """One of the ``*_at`` fields, as unix seconds."""
        value = self.fields.get(field)
        return float(value) if value else None
