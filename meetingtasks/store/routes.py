"""Redis operations of the routes registered at run time, shared by the deployment."""

from __future__ import annotations

from meetingtasks.base.keys import Keys
from meetingtasks.store import get_quick_redis, get_redis


def save(keys: Keys, task_type: str, route: str) -> None:
    """Keep ``route`` (JSON) for ``task_type`` and tell every process to read again."""
    pipe = get_redis().pipeline(transaction=True)
    pipe.hset(keys.routes(), task_type, route)
    pipe.incr(keys.routes_version())
    pipe.execute()


def version(keys: Keys) -> int:
    """The registrations' counter (raises at once if Redis does not answer)."""
    return int(get_quick_redis().get(keys.routes_version()) or 0)


def load(keys: Keys) -> tuple[int, dict[str, str]]:
    """(version, task type -> JSON route), read together (raises at once if Redis does
    not answer). Read between two looks at the version, not in a MULTI, which Redis
    refuses at its maxmemory: a worker started then still reads the routes."""
    while True:
        pipe = get_quick_redis().pipeline(transaction=False)
        pipe.get(keys.routes_version())
        pipe.hgetall(keys.routes())
        pipe.get(keys.routes_version())
        before, routes, after = pipe.execute()
        if before == after:
            return int(before or 0), dict(routes)
