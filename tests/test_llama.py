"""The real model behind the node: SmolLM2-135M-Instruct on llama.cpp (the ``model`` extra,
which scripts/test installs), in-process and through gateway -> worker -> node."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from meetingtasks.errors import ConfigurationError
from meetingtasks.node import llama
from meetingtasks.node.backends import Generation, load_backend
from meetingtasks.node.llama import LlamaBackend
from tests.support.gateways import Client, GatewayProcess, token
from tests.support.llm_nodes import NodeProcess

QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def model() -> LlamaBackend:
    assert llama.available(), "the model extra is missing: scripts/test installs it"
    return LlamaBackend()


def reply(model: LlamaBackend, text: str, system: str = "", **options: object) -> list[str]:
    return list(model.generate(Generation(text, "smollm2", system, options=options)))


def test_the_model_answers_a_question_in_streamed_tokens(model: LlamaBackend) -> None:
    deltas = reply(model, QUESTION, temperature=0, max_token_len=20)
    assert len(deltas) > 1
    assert "Paris" in "".join(deltas)


def test_max_tokens_bounds_the_reply_and_temperature_zero_repeats_it(model) -> None:
    short = reply(model, "Tell me a long story about a dragon.", temperature=0, max_token_len=5)
    assert 1 <= len(short) <= 5
    assert reply(model, QUESTION, temperature=0) == reply(model, QUESTION, temperature=0)


def test_the_chat_template_makes_the_system_prompt_count(model) -> None:
    """The same input under two system prompts gets two different replies: the template
    put the system prompt before the input, where the model reads it."""
    text = "The team ships on Friday. Maria writes the release notes."
    plain = "".join(reply(model, text, temperature=0, max_token_len=40))
    summary = "".join(
        reply(model, text, "Translate the user's text into French.", temperature=0,
              max_token_len=40)
    )  # fmt: skip
    assert plain != summary


def test_concurrent_requests_take_turns_on_one_context(model: LlamaBackend) -> None:
    alone = reply(model, QUESTION, temperature=0, max_token_len=12)
    replies: list[list[str]] = []

    def ask() -> None:
        replies.append(reply(model, QUESTION, temperature=0, max_token_len=12))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert replies == [alone] * 4  # each whole, none garbled by another


def test_an_abandoned_reply_gives_its_context_back(model: LlamaBackend) -> None:
    abandoned = model.generate(Generation(QUESTION, "smollm2", options={"temperature": 0}))
    assert next(abandoned)
    abandoned.close()
    # With one slot, this waits forever if the abandoned reply kept the context.
    finished = threading.Event()
    threading.Thread(target=lambda: (reply(model, QUESTION), finished.set()), daemon=True).start()
    assert finished.wait(60)


def test_setup_options_out_of_range_are_refused_before_any_prompt(model) -> None:
    with pytest.raises(ValueError, match="max_token_len"):
        model.setup({"model": "smollm2", "max_token_len": 10**6})
    with pytest.raises(ValueError, match="temperature"):
        model.setup({"model": "smollm2", "temperature": -1})


def test_the_backend_is_known_by_name_and_a_missing_file_is_a_clear_error(tmp_path) -> None:
    assert isinstance(load_backend("llama"), LlamaBackend)
    with pytest.raises(ConfigurationError, match="no such model file"):
        LlamaBackend(model_path=tmp_path / "missing.gguf")


def test_the_model_answers_a_websocket_client_through_worker_and_node(
    app, redis, start_worker, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path / "node.log", "--backend", "llama")
    gateway = GatewayProcess(tmp_path / "gateway.log")
    try:
        start_worker(["ai"], pool=None, concurrency=None,
                     env={"MEETINGTASKS_LLM_NODES": node.zmq_address})  # fmt: skip
        client = Client(gateway.ws_url(token("alice")))
        data = {"prompt": QUESTION, "temperature": 0, "max_tokens": 20}
        accepted = client.request(
            {"op": "submit", "request_id": "ask", "type": "llm_chat", "data": data}
        )
        result = client.result("ask", timeout=120)
        client.close()

        deltas = [f for f in client.frames if f["op"] == "delta"]
        assert accepted["op"] == "accepted" and result["status"] == "completed"
        assert len(deltas) > 1
        text = result["result"]
        assert text.strip() and text != QUESTION
        assert "".join(f["delta"] for f in deltas) == text
        assert "Paris" in text
        assert "backend: llama.cpp, SmolLM2-135M-Instruct" in (tmp_path / "node.log").read_text()
    finally:
        gateway.stop()
        node.kill()
