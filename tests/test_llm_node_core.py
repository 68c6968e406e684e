"""The reference node's answers without sockets: work units, streams, and every refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from meetingtasks.errors import ConfigurationError
from meetingtasks.llm.protocol import Response
from meetingtasks.node.backends import Backend, EchoBackend, Generation, load_backend
from meetingtasks.node.core import NodeCore


def ask(core: NodeCore, owner: str = "tcp:a", **message: Any) -> list[Response]:
    raw = message.pop("raw", None) or json.dumps({"request_id": "r", **message}).encode()
    return list(core.handle(raw, owner))


def setup(core: NodeCore, owner: str = "tcp:a", **data: Any) -> str:
    [response] = ask(core, owner, work_id="llm", action="setup", data={"model": "echo", **data})
    assert response.ok, response
    return response.work_id


def infer(core: NodeCore, work_id: str, text: str, owner: str = "tcp:a") -> list[Response]:
    data = {"delta": text, "index": 0, "finish": True}
    return ask(
        core, owner, work_id=work_id, action="inference", object="llm.utf-8.stream", data=data
    )


def test_setup_allocates_work_ids_and_exit_releases_them() -> None:
    core = NodeCore(EchoBackend())
    assert [setup(core), setup(core)] == ["llm.1000", "llm.1001"]
    [done] = ask(core, work_id="llm.1000", action="exit")
    assert done.ok and done.work_id == "llm.1000"
    assert core.work_ids() == ["llm.1001"]


def test_inference_streams_indexed_deltas_ending_with_finish() -> None:
    core = NodeCore(EchoBackend())
    work_id = setup(core)
    replies = infer(core, work_id, "the quick  brown fox")
    assert [r.data for r in replies] == [
        {"index": 0, "delta": "the", "finish": False},
        {"index": 1, "delta": " quick", "finish": False},
        {"index": 2, "delta": " brown", "finish": False},
        {"index": 3, "delta": " fox", "finish": False},
        {"index": 4, "delta": "", "finish": True},
    ]
    assert {(r.request_id, r.work_id, r.object) for r in replies} == {
        ("r", work_id, "llm.utf-8.stream")
    }


def test_plain_format_answers_once_and_input_may_come_in_chunks() -> None:
    core = NodeCore(EchoBackend())
    work_id = setup(core, response_format="llm.utf-8")
    first = {"delta": "two ", "index": 0, "finish": False}
    assert (
        ask(core, work_id=work_id, action="inference", object="llm.utf-8.stream", data=first) == []
    )
    last = {"delta": "parts", "index": 1, "finish": True}
    [reply] = ask(core, work_id=work_id, action="inference", object="llm.utf-8.stream", data=last)
    assert (reply.object, reply.data) == ("llm.utf-8", "two parts")
    [plain] = ask(core, work_id=work_id, action="inference", object="llm.utf-8", data="as text")
    assert plain.data == "as text"


def test_taskinfo_lists_units_and_describes_one() -> None:
    core = NodeCore(EchoBackend())
    work_id = setup(core, prompt="sys")
    [listing] = ask(core, work_id="llm", action="taskinfo")
    assert (listing.object, listing.data) == ("llm.tasklist", [work_id])
    [info] = ask(core, work_id=work_id, action="taskinfo")
    assert info.object == "llm.taskinfo" and info.data["model"] == "echo"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"raw": b"\x00\xff\x13garbage"}, -2),
        ({"raw": b'{"request_id": "r", "work_id": "llm"'}, -2),
        ({"raw": b'["a list"]'}, -2),
        ({"work_id": "llm", "action": "dance"}, -3),
        ({"work_id": "llm.999", "action": "inference", "data": "hi"}, -4),
        ({"work_id": "llm.999", "action": "exit"}, -6),
        ({"work_id": "llm.999", "action": "taskinfo"}, -6),
        ({"work_id": "vlm", "action": "setup", "data": {"model": "x"}}, -9),
        ({"work_id": "llm", "action": "setup", "data": "None"}, -5),
    ],
)
def test_bad_requests_get_error_replies_not_crashes(message: dict[str, Any], code: int) -> None:
    [reply] = ask(NodeCore(EchoBackend()), **message)
    assert reply.code == code and reply.message and reply.data == "None"


def test_bad_inference_input_is_refused_with_its_code() -> None:
    core = NodeCore(EchoBackend())
    work_id = setup(core)
    [empty] = infer(core, work_id, "   ")
    assert empty.code == -24
    skipped = {"delta": "x", "index": 3, "finish": True}
    [order] = ask(
        core, work_id=work_id, action="inference", object="llm.utf-8.stream", data=skipped
    )
    assert order.code == -25
    [shape] = ask(core, work_id=work_id, action="inference", data={"text": "x"})
    assert shape.code == -2
    assert infer(core, work_id, "still works")[-1].data["finish"] is True


class Failing(Backend):
    def setup(self, options: Mapping[str, Any]) -> None:
        if options["model"] != "ok":
            raise ValueError(f"no model {options['model']!r} here")

    def generate(self, request: Generation) -> Iterator[str]:
        yield "partial"
        raise RuntimeError("out of memory")


def test_backend_refusals_and_failures_become_error_replies() -> None:
    core = NodeCore(Failing())
    [refused] = ask(core, work_id="llm", action="setup", data={"model": "big"})
    assert refused.code == -5 and "no model 'big'" in refused.message
    work_id = setup(core, model="ok")
    first, failure = infer(core, work_id, "go")
    assert first.data["delta"] == "partial"
    assert failure.code == -11 and "out of memory" in failure.message
    assert infer(core, work_id, "again")[-1].code == -11  # the unit is usable again


def test_full_table_recycles_the_least_recently_used_idle_unit() -> None:
    ticks = iter(range(100))
    core = NodeCore(EchoBackend(), max_work_ids=2, clock=lambda: next(ticks))
    old, recent = setup(core), setup(core)
    infer(core, recent, "touch")
    newest = setup(core)
    assert core.work_ids() == sorted([recent, newest])
    assert infer(core, old, "hi")[0].code == -4


def test_setup_is_refused_when_every_unit_is_busy() -> None:
    core = NodeCore(EchoBackend(), max_work_ids=1)
    stream = core.handle(
        json.dumps(
            {"request_id": "r", "work_id": setup(core), "action": "inference", "data": "a b c"}
        ).encode(),
        "tcp:a",
    )
    next(stream)  # generating: the only unit is busy
    [full] = ask(core, work_id="llm", action="setup", data={"model": "echo"})
    assert full.code == -21
    stream.close()
    assert setup(core)  # the unit is idle again, so it can be recycled


def test_closing_a_connection_releases_its_units() -> None:
    core = NodeCore(EchoBackend())
    mine, theirs = setup(core, owner="tcp:a"), setup(core, owner="tcp:b")
    core.release_owner("tcp:a")
    assert core.work_ids() == [theirs] and mine not in core.work_ids()


def test_a_stopping_node_ends_replies_with_a_retryable_error() -> None:
    core = NodeCore(EchoBackend())
    work_id = setup(core)
    core.stopping.set()
    assert infer(core, work_id, "a b")[-1].code == -10


def test_load_backend_from_a_spec() -> None:
    assert isinstance(load_backend("meetingtasks.node.backends:EchoBackend"), EchoBackend)
    for spec in ("nowhere.module:Thing", "meetingtasks.node.backends:Missing", "json:dumps"):
        with pytest.raises(ConfigurationError, match="backend"):
            load_backend(spec)


def test_an_exit_mid_reply_stops_its_generation_and_frees_the_unit() -> None:
    """A client out of time exits its unit while the reply streams: nobody reads the rest."""
    closed: list[int] = []

    class Counting(Backend):
        def generate(self, request: Generation) -> Iterator[str]:
            sent = 0
            try:
                for word in request.text.split():
                    sent += 1
                    yield word
            finally:
                closed.append(sent)

    core = NodeCore(Counting())
    work_id = setup(core)
    data = {"delta": "one two three four five", "index": 0, "finish": True}
    stream = core.handle(
        json.dumps({"request_id": "r", "work_id": work_id, "action": "inference",
                    "object": "llm.utf-8.stream", "data": data}).encode(), "zmq:a",
    )  # fmt: skip
    assert next(stream).data["delta"] == "one"
    [done] = ask(core, "zmq:a", work_id=work_id, action="exit")

    assert done.ok and core.work_ids() == []
    assert list(stream) == []  # not another word
    assert closed == [2]


def test_replies_being_generated_are_counted_until_each_ends() -> None:
    core = NodeCore(EchoBackend())
    first, second = setup(core), setup(core)

    def stream(work_id: str) -> Iterator[Response]:
        data = {"delta": "one two", "index": 0, "finish": True}
        message = {"request_id": work_id, "work_id": work_id, "action": "inference",
                   "object": "llm.utf-8.stream", "data": data}  # fmt: skip
        return core.handle(json.dumps(message).encode(), "tcp:a")

    replies = [stream(first), stream(second)]
    for reply in replies:
        next(reply)
    assert core.replying == 2
    list(replies[0])
    assert core.replying == 1
    replies[1].close()  # the client left mid-reply
    assert core.replying == 0
