"""The four priority levels, as the numbers kombu's Redis transport understands.

Kombu keeps one Redis list per priority step inside each queue and a worker pops
the lists in step order (``BRPOP q q:3 q:6 q:9``), so step 0 is served first.
The enum's values *are* those steps, so ``task.apply_async(priority=Priority.HIGH)``
works on any task of the app with no conversion.
"""

from __future__ import annotations

from enum import IntEnum

from meetingtasks.errors import InvalidPriority


class Priority(IntEnum):
    """Task priority; a lower value is served first."""

    CRITICAL = 0
    HIGH = 3
    NORMAL = 6
    LOW = 9

    @classmethod
    def parse(cls, value: object) -> Priority:
        """Accept a Priority, its name in any case (``"high"``) or a Celery priority number
        0-9, which lands on the level kombu would put it in (the step at or above it:
        5 is HIGH, 8 is NORMAL)."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            member = cls.__members__.get(value.strip().upper())
            if member is not None:
                return member
        elif type(value) is int and value in _BY_NUMBER:
            return _BY_NUMBER[value]
        raise InvalidPriority(
            f"bad priority {value!r}: use one of {', '.join(cls.names())}, or a number 0-9 "
            "(0 is served first)"
        )

    @classmethod
    def names(cls) -> list[str]:
        return [p.name.lower() for p in cls]


#: Celery's priority numbers, each at the level kombu's steps put it in.
_BY_NUMBER = {n: max((p for p in Priority if p <= n), key=int) for n in range(10)}

#: The kombu priority steps, highest first, one Redis list each.
PRIORITY_STEPS: list[int] = [int(p) for p in Priority]
