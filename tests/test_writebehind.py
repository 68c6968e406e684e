"""The worker main process's write-behind: acknowledgements grouped into one command each."""

from __future__ import annotations

from meetingtasks.base.keys import get_keys
from meetingtasks.store.held import release
from meetingtasks.store.writebehind import WriteBehind


def _calls(redis, command: str) -> int:
    return int(redis.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_acknowledgements_of_a_flush_go_out_as_one_command_per_held_hash(redis) -> None:
    keys = get_keys()
    media, user = keys.held("media", "worker/1"), keys.held("user", "worker/1")
    tags = [f"tag-{i}" for i in range(5)]
    for tag in tags:
        redis.hset(media if tag != "tag-4" else user, tag, "{}")
    redis.hset(media, "kept", "{}")
    writes = WriteBehind()
    for tag in tags:
        writes.add_to_group(release, (media if tag != "tag-4" else user, tag))
    writes.add(lambda pipe: pipe.set("other-write", "1"))
    writes.count(keys.task_stats(), "completed:6:x")
    writes.count(keys.task_stats(), "completed:6:x")
    hdel, hincrby = _calls(redis, "hdel"), _calls(redis, "hincrby")

    writes.flush()

    assert redis.hkeys(media) == ["kept"] and not redis.exists(user)
    assert redis.get("other-write") == "1"
    assert redis.hget(keys.task_stats(), "completed:6:x") == "2"
    assert (_calls(redis, "hdel") - hdel, _calls(redis, "hincrby") - hincrby) == (2, 1)
    writes.flush()  # nothing left: nothing sent
    assert (_calls(redis, "hdel") - hdel, _calls(redis, "hincrby") - hincrby) == (2, 1)
