"""The worker main process's write-behind: acknowledgements grouped into one command each."""

from __future__ import annotations

from meetingtasks.base.keys import get_keys
from meetingtasks.celery_ext.transport import _release
from meetingtasks.store.writebehind import WriteBehind


def _calls(redis, command: str) -> int:
    return int(redis.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_acknowledgements_of_a_flush_go_out_as_three_commands(redis) -> None:
    keys = get_keys()
    tags = [f"tag-{i}" for i in range(5)]
    for tag in tags:
        redis.hset(keys.unacked(), tag, "[]")
        redis.zadd(keys.unacked_index(), {tag: 1.0})
        redis.hset(keys.unacked_owner(), tag, "worker/1")
    redis.hset(keys.unacked(), "kept", "[]")
    writes = WriteBehind()
    for tag in tags:
        writes.add_to_group(_release, tag)
    writes.add(lambda pipe: pipe.set("other-write", "1"))
    hdel, zrem = _calls(redis, "hdel"), _calls(redis, "zrem")

    writes.flush()

    assert redis.hkeys(keys.unacked()) == ["kept"]
    assert redis.zcard(keys.unacked_index()) == 0 and redis.hlen(keys.unacked_owner()) == 0
    assert redis.get("other-write") == "1"
    assert (_calls(redis, "hdel") - hdel, _calls(redis, "zrem") - zrem) == (2, 1)
    writes.flush()  # nothing left: nothing sent
    assert (_calls(redis, "hdel") - hdel, _calls(redis, "zrem") - zrem) == (2, 1)
