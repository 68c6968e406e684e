"""Task ids and delivery tags are random version 4 UUIDs, unique across threads and forks."""

from __future__ import annotations

import os
import threading
import uuid

from meetingtasks.base import ids


def test_ids_are_version_4_uuids_in_uuid4s_format() -> None:
    for _ in range(3 * ids.DRAW // 16):  # across several draws from the kernel
        text = ids.uuid4()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(ids.uuid4() for _ in range(2000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for out in made for i in out]
    assert len(set(everything)) == len(everything)


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    ids.uuid4()  # the parent's buffer holds ids not yet handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ids.uuid4().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    childs = os.read(read, 64).decode()
    assert childs != ids.uuid4()
