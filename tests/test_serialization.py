"""JSON only: nothing is sent with pickle, and a pickled message on a queue never runs."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.errors import InvalidOption
from meetingtasks.store import malformed
from tests.worker_tasks import read_journal, record


class MakesADirectoryWhenUnpickled:
    """What an attacker would put on the queue: code that runs on unpickling."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_sending_with_pickle_is_refused(app, redis) -> None:
    with pytest.raises(InvalidOption, match="JSON only"):
        record.apply_async(("x",), queue="user", serializer="pickle")
    assert redis.dbsize() == 0


def test_pickled_message_pushed_by_hand_is_rejected_never_run(
    app, redis, start_worker, tmp_path: Path
) -> None:
    # Take a genuine message off the queue and swap its JSON body for a pickle.
    record.apply_async(("pickled", "serial"), queue="user")
    key = get_keys().queue("user", Priority.NORMAL)
    message = json.loads(redis.rpop(key))
    marker = tmp_path / "unpickled"
    payload = ((MakesADirectoryWhenUnpickled(marker), "serial"), {}, {})
    message["body"] = base64.b64encode(pickle.dumps(payload)).decode()
    message["content-type"] = "application/x-python-serialize"
    message["content-encoding"] = "binary"
    redis.lpush(key, json.dumps(message))

    worker = start_worker(["user"])
    after = record.apply_async(("json", "serial"), queue="user")

    assert after.get(timeout=60) == "json"
    assert [entry["label"] for entry in read_journal("serial")] == ["json"]
    assert not marker.exists(), "the pickle was deserialised"
    assert "Refusing to deserialize untrusted content of type pickle" in worker.log()
    assert redis.llen(key) == 0  # rejected for good, not requeued to loop forever


def test_unreadable_entries_on_a_queue_are_set_aside_and_the_worker_goes_on(
    app, redis, redis_server, start_worker
) -> None:
    # A genuine message whose raw text gains a lone surrogate escape: valid for Python's
    # JSON, refused by the JSON decoder inside Redis that the fetch step uses.
    record.apply_async(("poisoned", "unreadable"), queue="user")
    key = get_keys().queue("user", Priority.NORMAL)
    message = json.loads(redis.rpop(key))
    message["headers"]["note"] = "PLACEHOLDER"
    poisoned = json.dumps(message).replace("PLACEHOLDER", "\\udc80")
    garbage = [b"\x80\xff not json", b"[1, 2]", b'{"body": "no properties"}', poisoned]
    for raw in garbage:
        redis.lpush(key, raw)

    worker = start_worker(["user"])
    after = record.apply_async(("readable", "unreadable"), queue="user")

    assert after.get(timeout=60) == "readable"
    assert [entry["label"] for entry in read_journal("unreadable")] == ["readable"]
    set_aside = malformed.entries(get_keys(), 10)
    assert sorted(entry.raw for entry in set_aside) == sorted(
        raw if isinstance(raw, bytes) else raw.encode() for raw in garbage
    )
    assert all(entry.reason and entry.source for entry in set_aside)
    assert redis.llen(key) == 0
    assert "fetching from" not in worker.log()
