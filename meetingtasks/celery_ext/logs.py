"""Structured logs: with ``MEETINGTASKS_LOG_FORMAT=json``, one JSON object per line
(python-json-logger), each line of a task's run carrying the task's fields.

Fields, when there is a task or a span to take them from: ``task_id``, ``task_type``,
``queue``, ``priority``, ``attempt``, ``worker``, ``session``, ``meeting``, ``trace_id``
and ``span_id`` (those of the current OpenTelemetry span, ``base/tracing.py``). Celery's
own lines about a task ("received", "succeeded in…", "retry") name it in their
arguments, which give ``task_id`` and ``task_type`` when no task is running.

A worker applies it each time Celery sets its logging up, in its main process and in
every pool process (``run/worker.py``); the gateway and the inference node at their
start. Plain text stays the default.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_task
from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from meetingtasks.base import headers as h
from meetingtasks.base.settings import get_settings

#: The fields every line has, before those of its task and span.
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


class TaskFields(logging.Filter):
    """Adds the running task's fields, and the current span's ids, to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task: Any = current_task
        request = getattr(task, "request", None) if task else None
        if request is not None and getattr(request, "id", None):
            delivery = getattr(request, "delivery_info", None) or {}
            fields = {
                "task_id": request.id,
                "task_type": task.name,
                "queue": delivery.get("routing_key"),
                "priority": delivery.get("priority"),
                "attempt": (getattr(request, "retries", 0) or 0) + 1,
                "worker": getattr(request, "hostname", None),
                "session": h.get(request, h.SESSION),
                "meeting": h.get(request, h.MEETING),
            }
        elif isinstance(record.args, dict) and isinstance(record.args.get("id"), str):
            fields = {"task_id": record.args["id"], "task_type": record.args.get("name")}
        else:
            fields = {}
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            fields["trace_id"] = format(context.trace_id, "032x")
            fields["span_id"] = format(context.span_id, "016x")
        for name, value in fields.items():
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


def apply(logger: logging.Logger | None = None) -> None:
    """Make every handler of ``logger`` (default: the root logger) write JSON lines with
    the task's fields; nothing unless ``MEETINGTASKS_LOG_FORMAT=json``."""
    if get_settings().log_format != "json":
        return
    logger = logger or logging.getLogger()
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.INFO)
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter(LINE_FORMAT))
        if not any(isinstance(f, TaskFields) for f in handler.filters):
            handler.addFilter(TaskFields())
