"""OpenTelemetry traces: one client request followed from the gateway through the send,
the queue, the run and the LLM node, and back to the client.

Off unless ``MEETINGTASKS_TRACE_EXPORTER`` says otherwise: then nothing is set up, and
every hook of ours checks ``active()`` first, so a send and a run cost what they cost
without tracing. ``otlp`` sends spans to an OTLP/HTTP collector (the SDK's own
``OTEL_EXPORTER_OTLP_ENDPOINT``, default http://localhost:4318, and the ``OTEL_*``
settings it reads); ``file`` appends one JSON line per span to ``MEETINGTASKS_TRACE_FILE``
(the tests read those; a look without a collector).

Each process calls ``setup(service)`` as it starts: the gateway, a worker's main process
and each of its pool processes (``run/worker.py``), an inference node. It installs the
SDK's tracer provider and opentelemetry-instrumentation-celery, which spans each send
(``apply_async/<task>``, PRODUCER; our send path fires the publish signals it hooks, and
it carries the context in the message's ``traceparent`` header) and each run
(``run/<task>``, CONSUMER). Our own spans: the gateway's submit and result frame
(``gateway/connection.py``, ``gateway/hub.py``), the time a task waited on its queue
(``celery_ext/task_tracing.py``), the LLM client's call (``llm/session.py``, the context
riding in the request's ``traceparent`` field) and the node's generation, its first token
an event (``node/service.py``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from meetingtasks.base.settings import get_settings

#: Our span attributes (OpenTelemetry's own ``messaging.*`` and ``llm.*`` beside them).
TASK_ID, TASK_TYPE, SESSION, USER = (
    "meetingtasks.task_id", "meetingtasks.type", "meetingtasks.session", "meetingtasks.user",
)  # fmt: skip
PRIORITY, DELAY, ATTEMPT = "meetingtasks.priority", "meetingtasks.delay", "meetingtasks.attempt"
ATTRIBUTES = (TASK_ID, TASK_TYPE, SESSION, USER, PRIORITY, DELAY, ATTEMPT)

#: Span kinds, so callers need no OpenTelemetry import of their own.
SERVER, CLIENT, INTERNAL = trace.SpanKind.SERVER, trace.SpanKind.CLIENT, trace.SpanKind.INTERNAL

_lock = threading.Lock()
#: The process (pid) that records spans. A forked pool process keeps its parent's
#: provider (the SDK's batch processor restarts its thread after a fork) and says so.
_set_up_in: int | None = None
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None


def active() -> bool:
    """Whether this process records spans (checked before any span of ours; with
    tracing off, without even asking the kernel for the pid)."""
    return _set_up_in is not None and _set_up_in == os.getpid()


def setup(service: str) -> bool:
    """Set tracing up in this process as ``service`` (once per process), as the settings
    say; False when they leave it off."""
    global _set_up_in, _tracer, _provider
    settings = get_settings()
    if settings.trace_exporter == "off":
        return False
    with _lock:
        if _provider is not None:  # this process, or the parent it was forked from
            _set_up_in = os.getpid()
            return True
        # The SDK and the Celery instrumentation load only when tracing is on.
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
        provider = TracerProvider(resource=resource)
        if settings.trace_exporter == "file":
            assert settings.trace_file is not None  # the settings' validator made sure
            # Appended line by line, by every process that shares the file.
            out = settings.trace_file.open("a", buffering=1, encoding="utf-8")
            exporter = ConsoleSpanExporter(out=out, formatter=_one_line)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        _tracer, _provider = provider.get_tracer("meetingtasks"), provider
        _set_up_in = os.getpid()
    return True


def traceparent() -> str | None:
    """The current span's context as a W3C ``traceparent`` value, to carry it on."""
    if not active():
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent_value: str | None) -> otel_context.Context | None:
    """The context a ``traceparent`` value carries (None: none, or not valid)."""
    if not traceparent_value:
        return None
    found = propagate.extract({"traceparent": traceparent_value})
    return found if trace.get_current_span(found).get_span_context().is_valid else None


@contextmanager
def span(
    name: str,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span | None]:
    """A span of ours, current inside the block; nothing at all when tracing is off."""
    if not active():
        yield None
        return
    attributes = {key: value for key, value in (attributes or {}).items() if value is not None}
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as s:
        yield s


def start(
    name: str,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: float | None = None,
) -> trace.Span | None:
    """A span of ours that is not made current (a generator's, or one of the past:
    ``start_time`` in unix seconds); the caller ends it. None when tracing is off."""
    if not active():
        return None
    attributes = {key: value for key, value in (attributes or {}).items() if value is not None}
    nanos = None if start_time is None else int(start_time * 1e9)
    return _tracer.start_span(
        name, context=parent, kind=kind, attributes=attributes, start_time=nanos
    )


def child_of(parent: trace.SpanContext) -> otel_context.Context:
    """A context whose parent is ``parent`` (a span that may have ended)."""
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def _one_line(span: Any) -> str:
    """A span as one line of JSON (the SDK's exporter writes it indented)."""
    return str(span.to_json(indent=None)) + "\n"
