"""The Edge-LLM-Infra protocol without sockets: requests, replies, stream assembly, errors."""

from __future__ import annotations

import json

import pytest

from meetingtasks.errors import InferenceError, InvalidPayload, NodeUnavailable, UnitUnavailable
from meetingtasks.llm.protocol import (
    STREAM_FORMAT,
    ErrorCode,
    ReplyAssembler,
    Response,
    UnitSetup,
    check_reply,
    encode,
    error_response,
    exit_request,
    inference_request,
    node_error,
    parse_request,
    parse_response,
    split_prompt,
    taskinfo_request,
)

NODE = "tcp://node:5560"


def test_setup_request_has_the_stackflow_shape() -> None:
    request = UnitSetup("llm", "qwen", "be brief").request("r1")
    assert json.loads(request.encode()) == {
        "request_id": "r1",
        "work_id": "llm",
        "action": "setup",
        "object": "llm.setup",
        "data": {
            "model": "qwen",
            "response_format": STREAM_FORMAT,
            "input": STREAM_FORMAT,
            "enoutput": True,
            "prompt": "be brief",
        },
    }


def test_inference_taskinfo_and_exit_requests() -> None:
    assert json.loads(inference_request("r2", "llm.1000", "hi").encode()) == {
        "request_id": "r2",
        "work_id": "llm.1000",
        "action": "inference",
        "object": STREAM_FORMAT,
        "data": {"delta": "hi", "index": 0, "finish": True},
    }
    assert taskinfo_request("r3", "llm.1000").to_dict() == {
        "request_id": "r3",
        "work_id": "llm.1000",
        "action": "taskinfo",
    }
    assert exit_request("r4", "llm.1000").to_dict()["action"] == "exit"


def test_encode_hides_braces_inside_strings_but_keeps_the_text() -> None:
    """StackFlow's unit manager frames TCP input by counting braces."""
    message = {"data": {"delta": 'a {b} "q\\"} \\ {'}, "n": [1, {"x": "}"}]}
    raw = encode(message).decode()
    structural = raw.replace("\\u007b", "").replace("\\u007d", "")
    assert structural.count("{") == structural.count("}") == 3
    assert json.loads(raw) == message
    assert "\n" not in encode({"t": "line\nbreak"}).decode()


def test_parse_response_reads_a_stackflow_reply() -> None:
    raw = (
        b'{"created":1742779468,"data":{"delta":"Once","finish":false,"index":0},'
        b'"error":{"code":0,"message":""},"object":"llm.utf-8.stream",'
        b'"request_id":"2","work_id":"llm2.1002"}'
    )
    response = parse_response(raw)
    assert response.ok and response.work_id == "llm2.1002" and response.created == 1742779468
    assert response.data == {"delta": "Once", "finish": False, "index": 0}
    assert parse_response(Response("1", "llm.1", code=-6, message="gone").encode()).code == -6


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xff\xfe binary",
        b"not json",
        b"[1, 2]",
        b'{"work_id": "llm", "error": {"code": 0}}',
        b'{"request_id": "1", "work_id": "llm", "error": {"code": "0"}}',
        b'{"request_id": "1", "work_id": "llm", "error": "bad"}',
        b'{"request_id": "1", "work_id": "llm", "object": 5}',
    ],
)
def test_parse_response_refuses_garbage_as_inference_error(raw: bytes) -> None:
    with pytest.raises(InferenceError, match="reply from tcp://node:5560"):
        parse_response(raw, NODE)


def test_parse_request_refuses_what_a_node_cannot_serve() -> None:
    assert parse_request(b'{"request_id":"1","work_id":"llm","action":"exit"}').action == "exit"
    for raw in (b"\xff", b"{}", b'{"request_id":"1","work_id":"llm","action":null}'):
        with pytest.raises(InferenceError, match="request"):
            parse_request(raw)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (ErrorCode.TASK_FULL, NodeUnavailable),
        (ErrorCode.NOT_AVAILABLE, NodeUnavailable),
        (ErrorCode.UNIT_CALL_FAILED, UnitUnavailable),
        (ErrorCode.UNKNOWN_WORK_ID, InferenceError),
        (ErrorCode.UNKNOWN_ACTION, InferenceError),
        (ErrorCode.MODEL_RUN_FAILED, InferenceError),
        (-77, InferenceError),
    ],
)
def test_error_codes_map_to_retryable_or_permanent(code: int, kind: type[Exception]) -> None:
    error = node_error(Response("1", "llm.1000", code=code, message="boom"), NODE)
    assert type(error) is kind
    assert f"error {int(code)} (boom)" in str(error) and NODE in str(error)


def test_check_reply_accepts_stackflow_error_attribution_only() -> None:
    setup = UnitSetup("llm", "m").request("r1")
    check_reply(setup, Response("r1", "llm.1000"), NODE)
    with pytest.raises(InferenceError, match="mixes up replies"):
        check_reply(setup, Response("r1", "vlm.1000"), NODE)
    inference = inference_request("r2", "llm.1000", "hi")
    check_reply(inference, error_response("r2", "llm", ErrorCode.MODEL_RUN_FAILED, "x"), NODE)
    check_reply(inference, error_response("0", "sys", ErrorCode.JSON_FORMAT, "x"), NODE)
    with pytest.raises(InferenceError, match="mixes up replies"):
        check_reply(inference, Response("r2", "llm.1001", "llm.utf-8", "x"), NODE)
    with pytest.raises(InferenceError, match="mixes up replies"):
        check_reply(inference, Response("0", "llm.1000", "llm.utf-8", "x"), NODE)


def _chunk(index: int, delta: str, finish: bool = False, request_id: str = "r") -> Response:
    data = {"index": index, "delta": delta, "finish": finish}
    return Response(request_id, "llm.1000", STREAM_FORMAT, data)


def test_assembler_joins_ordered_chunks_until_finish() -> None:
    reply = ReplyAssembler(inference_request("r", "llm.1000", "x"), NODE)
    deltas = [reply.feed(_chunk(0, "Once")), reply.feed(_chunk(1, " upon"))]
    assert not reply.done
    deltas.append(reply.feed(_chunk(2, "", finish=True)))
    assert reply.done and deltas == ["Once", " upon", ""] and reply.text == "Once upon"


def test_assembler_takes_a_plain_reply_whole() -> None:
    reply = ReplyAssembler(inference_request("r", "llm.1000", "x"), NODE)
    assert reply.feed(Response("r", "llm.1000", "llm.utf-8", "all of it")) == "all of it"
    assert reply.done and reply.text == "all of it"


@pytest.mark.parametrize(
    ("responses", "message"),
    [
        ([_chunk(0, "a"), _chunk(0, "a")], "repeated chunk 0"),
        ([_chunk(0, "a"), _chunk(2, "c")], "out-of-order chunk 2"),
        ([_chunk(1, "b")], "out-of-order chunk 1"),
        ([_chunk(0, "a", request_id="other")], "mixes up replies"),
        ([_chunk(0, "", finish=True), _chunk(1, "late")], "after finish"),
        ([Response("r", "llm.1000", STREAM_FORMAT, {"index": "0", "delta": "a"})], "not"),
        ([Response("r", "llm.1000", STREAM_FORMAT, "text on a stream")], "not"),
    ],
)
def test_assembler_refuses_a_corrupt_stream(responses: list[Response], message: str) -> None:
    reply = ReplyAssembler(inference_request("r", "llm.1000", "x"), NODE)
    with pytest.raises(InferenceError, match=message):
        for response in responses:
            reply.feed(response)


def test_assembler_raises_what_an_error_reply_means() -> None:
    reply = ReplyAssembler(inference_request("r", "llm.1000", "x"), NODE)
    reply.feed(_chunk(0, "a"))
    with pytest.raises(InferenceError, match="error -11"):
        reply.feed(error_response("r", "llm", ErrorCode.MODEL_RUN_FAILED, "oom"))
    busy = ReplyAssembler(inference_request("r", "llm.1000", "x"), NODE)
    with pytest.raises(NodeUnavailable, match="error -21"):
        busy.feed(error_response("r", "llm.1000", ErrorCode.TASK_FULL, "task full"))


def test_split_prompt_turns_chat_history_into_setup_prompt_and_input() -> None:
    assert split_prompt("hello") == ("", "hello")
    assert split_prompt([{"role": "user", "content": "hi"}]) == ("", "hi")
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye?"},
    ]
    assert split_prompt(history) == ("be brief", "user: hi\nassistant: hello\nuser: bye?")


@pytest.mark.parametrize(
    "prompt",
    [
        "  ",
        [],
        [{"role": "system", "content": "only"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "robot", "content": "x"}],
        [{"role": "user", "content": 3}],
        ["just text"],
    ],
)
def test_split_prompt_refuses_bad_prompts(prompt: object) -> None:
    with pytest.raises(InvalidPayload):
        split_prompt(prompt)  # type: ignore[arg-type]
