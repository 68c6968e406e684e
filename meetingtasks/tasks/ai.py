"""AI tasks (queue ``ai``): prompts to inference nodes over the LLM bridge (``llm/``).

Each worker process keeps one LLMClient over ``MEETINGTASKS_LLM_NODES`` (made after the
pool forked: ZMQ sockets must not cross a fork). Streamed output goes to the submitting
client session as it arrives (``task_output.py``); the whole text is the task's result.

The ``ai`` queue's workers run in threads, hundreds at once (``routes/ai.toml``). The
call's budget is the task's soft time limit, enforced by the client on every socket wait:
when it runs out, the reply's work unit is exited (the node stops generating) and the task
ends ``timeout``, not retried; the pool's own limits (``celery_ext/thread_pool.py``) are
the backstop. A node that is down or slow raises NodeUnavailable, which is retried; a node
error code or garbage raises InferenceError, which is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from meetingtasks.app import app
from meetingtasks.base.settings import get_settings
from meetingtasks.errors import CallTimedOut, InvalidPayload
from meetingtasks.llm import LLMClient
from meetingtasks.task_output import TaskOutput

#: How often (seconds) a streaming task checks whether it was cancelled.
CANCEL_CHECK_INTERVAL = 0.5

_client: tuple[int, LLMClient] | None = None


def llm_client() -> LLMClient:
    """This process's client (a new one after fork)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        settings = get_settings()
        nodes = [n.strip() for n in settings.llm_nodes.split(",") if n.strip()]
        _client = (
            os.getpid(),
            LLMClient(nodes, model=settings.llm_model, read_timeout=settings.llm_read_timeout),
        )
    return _client[1]


def generate(
    task: Task,
    prompt: str | Sequence[Mapping[str, str]],
    unit: str,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> str:
    """Stream a reply to the task's client session; returns the whole text."""
    stream = TaskOutput.for_request(task.request)
    next_check = time.monotonic() + CANCEL_CHECK_INTERVAL

    def on_delta(text: str) -> None:
        nonlocal next_check
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + CANCEL_CHECK_INTERVAL
            task.stop_if_cancelled()
        stream.delta(text)

    timeout = task.request.timelimit[1] if task.request.timelimit else None
    timeout = timeout or task.soft_time_limit
    try:
        return llm_client().stream(
            prompt,
            unit=unit,
            timeout=timeout,
            max_tokens=max_tokens,
            temperature=temperature,
            on_delta=on_delta,
            on_restart=stream.restart,
        )
    except CallTimedOut as exc:
        raise SoftTimeLimitExceeded(f"{exc} (the task's time limit: {timeout}s)") from exc


def _text(name: str, value: Any, limit: int = 200_000) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidPayload(f"{name} must be a non-empty string of at most {limit} characters")
    return value


@app.task(name="ai.llm_chat", bind=True)
def llm_chat(
    self: Task,
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> str:
    """Chat completion: a prompt, or a history of {role, content} messages; ``max_tokens``
    and ``temperature`` go to the model (None: the node's defaults; LLMClient checks them)."""
    if prompt is not None and messages is None:
        chat: str | list[dict[str, str]] = _text("prompt", prompt)
    elif messages is not None and prompt is None:
        chat = messages
    else:
        raise InvalidPayload("ai.llm_chat takes either prompt or messages")
    return generate(self, chat, _unit(), max_tokens, temperature)


@app.task(name="ai.summarize", bind=True)
def summarize(self: Task, text: str, max_words: int = 120) -> str:
    """A summary of a transcript or document, sampled at a low temperature."""
    words = _whole("max_words", max_words, 1, 2000)
    instruction = f"Summarize the following text in at most {words} words."
    chat = [
        {"role": "system", "content": instruction},
        {"role": "user", "content": _text("text", text)},
    ]
    return generate(self, chat, _unit(), max_tokens=words * 2 + 16, temperature=0.2)


@app.task(name="ai.speech_recognition", bind=True)
def speech_recognition(self: Task, audio: str, language: str = "en") -> str:
    """Text of base64-encoded audio, from the node's speech unit."""
    prompt = [
        {"role": "system", "content": f"language={language}"},
        {"role": "user", "content": _text("audio", audio, limit=10_000_000)},
    ]
    return generate(self, prompt, get_settings().llm_asr_unit)


@app.task(name="ai.emotion_detection", bind=True)
def emotion_detection(self: Task, text: str) -> str:
    """The emotion a participant's utterance conveys, in one word."""
    instruction = "Name the emotion this utterance conveys, in one word."
    return generate(
        self,
        [
            {"role": "system", "content": instruction},
            {"role": "user", "content": _text("text", text)},
        ],
        _unit(),
    )


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidPayload(f"{name} must be a whole number from {low} to {high}")
    return value


def _unit() -> str:
    return get_settings().llm_unit
