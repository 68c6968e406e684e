"""What the reference node runs to answer a prompt: the one interface models plug in behind.

A real model backend subclasses ``Backend`` and implements ``generate``; it may override
``setup`` to refuse a model or options it cannot serve, so the client hears so at setup
(error -5) rather than at the first prompt. ``meetingtasks ai-node --backend NAME`` picks
one: ``echo`` (the default, ``EchoBackend``, a test double), ``llama`` (a real model,
``llama.py``, with the ``model`` extra) or ``package.module:factory`` for your own.
"""

from __future__ import annotations

import importlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from meetingtasks.errors import ConfigurationError, MeetingTasksError
from meetingtasks.llm.protocol import ErrorCode


@dataclass(frozen=True)
class Generation:
    """One inference: the input text and everything its work unit was set up with."""

    text: str
    model: str
    system_prompt: str = ""
    work_id: str = ""
    #: The whole setup data, for backend options (max_token_len, temperature …).
    options: Mapping[str, Any] = field(default_factory=dict)


class BackendError(MeetingTasksError):
    """A backend's refusal, with the error code the node answers for it.

    Any other exception from ``generate`` is -11 (model run failed); a backend that
    forwards to another node says -10 (busy or unreachable: the client retries) or passes
    the upstream's own code through."""

    def __init__(self, message: str, code: int = ErrorCode.MODEL_RUN_FAILED) -> None:
        super().__init__(message)
        self.code = int(code)


class Backend(ABC):
    """A model behind the reference node. Called from several threads at once."""

    #: Replies it generates at once (None: no limit it knows of); a pool of backends
    #: sends each reply to the member with the most free (``pool.py``).
    slots: int | None = None

    def setup(self, options: Mapping[str, Any]) -> None:  # noqa: B027  (optional hook)
        """Check (and load) what a setup asks for; raise ValueError saying why it cannot
        be served. The default accepts everything."""

    @abstractmethod
    def generate(self, request: Generation) -> Iterator[str]:
        """Yield the reply piece by piece; raising fails the reply with error -11.

        The node closes the generator early when nobody reads the rest (the client left
        or exited the work unit), so a backend frees what it holds in ``finally``."""

    def describe(self) -> str:
        """What runs behind the node, in a few words (printed when it starts)."""
        return type(self).__name__

    def health(self) -> dict[str, Any]:
        """JSON-able state for the node's stats (an upstream's health); none by default."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release what the backend holds; the node calls it once it stopped serving."""


class EchoBackend(Backend):
    """A deterministic test double of a model, not a model: it answers with the input.

    The reply is the input's words joined by single spaces, one word per delta (the
    space goes before the word), so a test knows every delta in advance. ``delay``
    seconds pass before each word: enough to stop or kill a node mid-stream.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def describe(self) -> str:
        return "echo (a test double that repeats the input, not a model)"

    def generate(self, request: Generation) -> Iterator[str]:
        for index, word in enumerate(re.findall(r"\S+", request.text)):
            if self.delay:
                time.sleep(self.delay)
            yield word if index == 0 else f" {word}"


def check_sampling(options: Mapping[str, Any]) -> None:
    """Refuse (ValueError) sampling options a forwarding backend would pass on broken:
    ``max_token_len`` a whole number >= 1, ``temperature`` a number >= 0, or unset."""
    max_tokens, temperature = options.get("max_token_len"), options.get("temperature")
    if max_tokens is not None and not (type(max_tokens) is int and max_tokens >= 1):
        raise ValueError(f"max_token_len must be a whole number >= 1, not {max_tokens!r}")
    if temperature is not None and not (type(temperature) in (int, float) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0, not {temperature!r}")


#: Backends ``--backend`` knows by name.
BUILT_IN = {
    "echo": "meetingtasks.node.backends:EchoBackend",
    "llama": "meetingtasks.node.llama:LlamaBackend",
}


def load_backend(spec: str, **options: Any) -> Backend:
    """A backend by name (``echo``, ``llama``) or from ``package.module:factory`` (a Backend
    class or a function making one), made with ``options``."""
    module_name, _, attribute = BUILT_IN.get(spec, spec).partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
        backend = factory(**options)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot load backend {spec!r} ({exc}): give {' or '.join(BUILT_IN)}, or "
            "package.module:factory"
        ) from exc
    if not isinstance(backend, Backend):
        raise ConfigurationError(f"backend {spec!r} made a {type(backend).__name__}, not a Backend")
    return backend
