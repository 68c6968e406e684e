"""Redis memory: the eviction policy a deployment may run with.

At its ``maxmemory`` Redis either refuses writes or evicts keys, as its
``maxmemory-policy`` says. Refusing is safe here: a send fails whole with ``RedisFull``,
nothing accepted is lost, and workers keep draining the queues, which frees memory. An
``allkeys-*`` policy is not: it may evict a queue list or the messages workers hold, and
those tasks are gone without a trace. So the processes that run or accept tasks (worker,
gateway, scheduler) refuse to start on such a Redis.
"""

from __future__ import annotations

from typing import Any

from meetingtasks.errors import ConfigurationError
from meetingtasks.store import get_redis

#: Policies that may evict any key, queue lists included.
UNSAFE_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def check_eviction_policy(client: Any = None) -> str:
    """Redis's ``maxmemory-policy``, or ConfigurationError if it may evict queues (read
    from INFO, which managed Redis services allow where CONFIG is renamed away)."""
    policy = str((client or get_redis()).info("memory").get("maxmemory_policy", "noeviction"))
    if policy in UNSAFE_POLICIES:
        raise ConfigurationError(
            f"Redis's maxmemory-policy is {policy}: at its maxmemory Redis would evict any "
            "key, queue lists and the messages workers hold included, and those tasks would "
            "be lost. Set it to noeviction (CONFIG SET maxmemory-policy noeviction, or in "
            "redis.conf): a full Redis then refuses new sends (RedisFull) while workers "
            "drain the queues"
        )
    return policy


#: Keys a snapshot reads at most to count families (a sample of a bigger database is
#: scaled up to its size); keys of a family measured with MEMORY USAGE for its bytes.
SCAN_MOST = 20_000
MEASURED_PER_FAMILY = 20

#: Redis's ``hash-max-listpack-value`` for our deployments (its default is 64): a task's
#: record holds its result, and one field past this size turns the whole hash from a
#: listpack into a hashtable, about 500 bytes more (measured: a 100-byte result, 488
#: bytes kept as listpack, 952 as hashtable). ``scripts/run`` and compose.yaml set it.
RECORD_LISTPACK_VALUE = 2048

#: Prefix of the keys Celery's result backend still writes: a group's result and its
#: chord's counters (a task's result is a field of its record).
GROUP_RESULTS = "celery-taskset-meta"


def family_of(key: str, namespace: str) -> str:
    """The family of one of our keys: what follows the namespace, up to the next ``:``
    (a queue's lists are its name; Celery's keys of groups and chords their prefix)."""
    rest = key[len(namespace) + 1 :] if key.startswith(namespace + ":") else key
    if rest.startswith(GROUP_RESULTS):
        return GROUP_RESULTS
    return rest.split(":", 1)[0]


def memory_snapshot(namespace: str, client: Any = None) -> dict[str, Any]:
    """Redis's memory and what our keys take of it, cheaply enough to read every few
    seconds: used and maximum bytes, the eviction policy, keys per family (counted on up
    to SCAN_MOST keys, scaled to the database's size beyond, as if it held only this
    deployment's keys), bytes per key of each
    family (MEMORY USAGE of a few of them), and the bytes a finished task leaves behind
    (its status record plus its result key, where it has one)."""
    client = client or get_redis()
    info = client.info("memory")
    total = int(client.dbsize())
    counts: dict[str, int] = {}
    samples: dict[str, list[str]] = {}
    seen = 0
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        family = family_of(str(key), namespace)
        counts[family] = counts.get(family, 0) + 1
        if len(samples.setdefault(family, [])) < MEASURED_PER_FAMILY:
            samples[family].append(str(key))
        seen += 1
        if seen >= SCAN_MOST:
            break
    scale = total / seen if seen >= SCAN_MOST and seen else 1.0
    ordered = sorted(samples.items())
    pipe = client.pipeline(transaction=False)
    for _, keys in ordered:
        for key in keys:
            pipe.memory_usage(key, samples=0)
    sizes = iter(pipe.execute())
    families = {}
    for family, keys in ordered:
        measured = [size for size in (next(sizes) for _ in keys) if size]
        families[family] = {
            "keys": round(counts[family] * scale),
            "bytes_per_key": round(sum(measured) / len(measured)) if measured else 0,
        }
    records = families.get("status", {"keys": 0, "bytes_per_key": 0})
    return {
        "used_bytes": int(info["used_memory"]),
        "max_bytes": int(info.get("maxmemory", 0)),
        "policy": str(info.get("maxmemory_policy", "noeviction")),
        "keys": total,
        "sampled": seen < total and seen >= SCAN_MOST,
        "families": families,
        "bytes_per_task": records["bytes_per_key"],
    }
