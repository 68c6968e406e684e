"""One request, one trace: OpenTelemetry spans from the gateway's submit through the send,
the queue, the run, the LLM client and the node's generation, and back to the client's
result frame, across three processes; a plain Celery producer's trace continued; and the
JSON log lines of a task's runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from meetingtasks.base.keys import get_keys
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.run.stack import Stack
from tests.support.gateways import Client, GatewayProcess, token
from tests.support.llm_nodes import NodeProcess
from tests.support.waiting import wait_until


def spans(*paths: Path) -> list[dict[str, Any]]:
    """Every span the processes wrote (one JSON object per line)."""
    found = []
    for path in paths:
        if path.exists():
            found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


def by_name(found: list[dict[str, Any]], trace_id: str) -> dict[str, dict[str, Any]]:
    """The spans of one trace, by name (the last of a name wins)."""
    return {s["name"]: s for s in found if s["context"]["trace_id"] == trace_id}


def parent_of(span: dict[str, Any], named: dict[str, dict[str, Any]]) -> str | None:
    """The name of ``span``'s parent among ``named``."""
    return next(
        (name for name, s in named.items() if s["context"]["span_id"] == span["parent_id"]), None
    )


def test_one_llm_chat_is_one_trace_across_gateway_worker_and_node(
    app, redis, start_worker, tmp_path: Path
) -> None:
    files = {name: tmp_path / f"{name}.spans" for name in ("gateway", "worker", "node")}

    def traced(name: str) -> dict[str, str]:
        return {"MEETINGTASKS_TRACE_EXPORTER": "file", "MEETINGTASKS_TRACE_FILE": str(files[name])}

    node = NodeProcess(tmp_path / "node.log", "--token-delay", "0.002", env=traced("node"))
    gateway = GatewayProcess(
        tmp_path / "gateway.log", trace_exporter="file", trace_file=files["gateway"]
    )
    try:
        start_worker(
            ["ai"], env={"MEETINGTASKS_LLM_NODES": node.address("zmq"), **traced("worker")}
        )
        client = Client(gateway.ws_url(token("alice")))
        submit = {"op": "submit", "request_id": "c1", "type": "llm_chat",
                  "data": {"prompt": "hi there"}}  # fmt: skip
        accepted = client.request(submit)
        result = client.result("c1", timeout=60)
        assert result["status"] == "completed"
        client.close()
        wanted = {"gateway.submit", "apply_async/ai.llm_chat", "queue.wait", "run/ai.llm_chat",
                  "llm.call", "node.generate", "gateway.result"}  # fmt: skip

        def whole_trace() -> dict[str, dict[str, Any]] | None:
            found = spans(*files.values())
            task_id = accepted["task_id"]
            submits = [s for s in found if s["name"] == "gateway.submit"
                       and s["attributes"].get("meetingtasks.task_id") == task_id]  # fmt: skip
            named = by_name(found, submits[0]["context"]["trace_id"]) if submits else {}
            return named if wanted <= set(named) else None

        named = wait_until(whole_trace, "every span of the request's trace", timeout=30)
    finally:
        gateway.stop()
        node.kill()
    parents = {name: parent_of(named[name], named) for name in wanted}
    assert parents == {
        "gateway.submit": None,
        "apply_async/ai.llm_chat": "gateway.submit",
        "queue.wait": "apply_async/ai.llm_chat",
        "run/ai.llm_chat": "apply_async/ai.llm_chat",
        "llm.call": "run/ai.llm_chat",
        "node.generate": "llm.call",
        "gateway.result": "gateway.submit",
    }
    send = named["apply_async/ai.llm_chat"]["attributes"]
    assert send["messaging.destination.name"] == "ai" and "meetingtasks.priority" in send
    assert [e["name"] for e in named["node.generate"]["events"]] == ["first_token"]
    services = {
        name: named[name]["resource"]["attributes"]["service.name"]
        for name in ("gateway.submit", "run/ai.llm_chat", "node.generate")
    }
    assert services == {
        "gateway.submit": "meetingtasks-gateway",
        "run/ai.llm_chat": "meetingtasks-worker",
        "node.generate": "meetingtasks-node",
    }


#: A plain Celery service, traced with OpenTelemetry's own SDK and Celery
#: instrumentation, sending to our inbox (docs/wire.md): no meetingtasks import.
TRACED_PLAIN = """
import json, sys
from celery import Celery
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, ConsoleSpanExporter
url, prefix, spans = sys.argv[1], sys.argv[2], sys.argv[3]
provider = TracerProvider()
out = open(spans, "w")
provider.add_span_processor(SimpleSpanProcessor(
    ConsoleSpanExporter(out=out, formatter=lambda s: json.dumps(json.loads(s.to_json())) + "\\n")))
trace.set_tracer_provider(provider)
CeleryInstrumentor().instrument()
app = Celery("service", broker=url, backend=url)
app.conf.broker_transport_options = {"global_keyprefix": prefix, "priority_steps": [0]}
app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
result = app.send_task("system.echo", kwargs={"value": 7}, queue="default:inbox")
value = result.get(timeout=30)
out.flush()
imported = sorted(m for m in sys.modules if m.split(".")[0] == "meetingtasks")
print(json.dumps({"id": result.id, "value": value, "meetingtasks_imported": imported}))
"""


def test_a_plain_celery_producers_trace_goes_on_in_our_worker(
    app, redis, start_worker, tmp_path: Path
) -> None:
    ours, theirs = tmp_path / "worker.spans", tmp_path / "plain.spans"
    start_worker(
        ["default"],
        env={"MEETINGTASKS_TRACE_EXPORTER": "file", "MEETINGTASKS_TRACE_FILE": str(ours)},
    )
    url = f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/0"
    done = subprocess.run(
        [sys.executable, "-c", TRACED_PLAIN, url, get_keys().prefix, str(theirs)],
        cwd="/", capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("MEETINGTASKS_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["value"] == 7 and out["meetingtasks_imported"] == []
    [sent] = [s for s in spans(theirs) if s["name"] == "apply_async/system.echo"]

    def run_span() -> dict[str, Any] | None:
        runs = [s for s in spans(ours) if s["name"] == "run/system.echo"]
        return runs[0] if runs else None

    run = wait_until(run_span, "the worker's run span")
    assert run["context"]["trace_id"] == sent["context"]["trace_id"]
    assert run["parent_id"] == sent["context"]["span_id"]


def test_json_log_lines_carry_the_task_fields_across_a_retry(
    app, redis, start_worker, tmp_path: Path
) -> None:
    worker = start_worker(
        ["user"],
        env={
            "MEETINGTASKS_LOG_FORMAT": "json",
            "MEETINGTASKS_TRACE_EXPORTER": "file",
            "MEETINGTASKS_TRACE_FILE": str(tmp_path / "worker.spans"),
        },
    )
    request = TaskRequest(
        type="test.flaky", payload={"journal_name": "json-logs", "fail_times": 1},
        session_id="s-json", meeting_id="m-json",
    )  # fmt: skip
    dispatcher = TaskDispatcher()
    task_id = dispatcher.dispatch(request).task_id
    assert dispatcher.wait(task_id, timeout=60).result == 1  # it ran twice

    def lines() -> list[dict[str, Any]] | None:
        found = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        ours = [line for line in found if line.get("task_id") == task_id]
        return ours if any("succeeded" in line["message"] for line in ours) else None

    ours = wait_until(lines, "the task's log lines")
    retry = next(line for line in ours if " retry: " in line["message"])
    success = next(line for line in ours if "succeeded" in line["message"])
    for line, attempt in ((retry, 1), (success, 2)):
        assert line["task_type"] == "test.flaky" and line["attempt"] == attempt
        assert line["queue"] == "user" and isinstance(line["priority"], int)
        assert line["session"] == "s-json" and line["meeting"] == "m-json"
        assert line["worker"].startswith("w") and line["levelname"] == "INFO"
        assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
    assert retry["span_id"] != success["span_id"]  # each run its own span
    assert retry["trace_id"] == success["trace_id"]  # the retry goes on with its trace


def test_the_stack_finds_the_newest_requests_trace_in_phoenix() -> None:
    """``scripts/run --trace`` prints each new request's trace page: read from Phoenix's
    REST API (a double here, answering as Phoenix 20 answered on this machine)."""
    spans_of = {
        "data": [
            {"name": "run/ai.llm_chat", "context": {"trace_id": "b" * 32},
             "start_time": "2026-12-08T01:56:22+00:00"},
            {"name": "gateway.submit", "context": {"trace_id": "a" * 32},
             "start_time": "2026-12-08T01:50:00+00:00"},
            {"name": "gateway.submit", "context": {"trace_id": "b" * 32},
             "start_time": "2026-12-08T01:56:21+00:00"},
        ]
    }  # fmt: skip
    answers = {
        "/v1/projects": {
            "data": [
                {"name": "default", "id": "UHJvamVjdDox"},
                {"name": "meetingtasks", "id": "UHJvamVjdDoy"},
            ]
        },
        "/v1/projects/meetingtasks/spans?limit=100": spans_of,
    }

    class Phoenix(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answers.get(self.path)).encode()
            self.send_response(200 if self.path in answers else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Phoenix)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        url = Stack(phoenix_port=port).latest_trace_url()
        assert url == f"http://127.0.0.1:{port}/projects/UHJvamVjdDoy/traces/{'b' * 32}"
        spans_of["data"] = []
        assert Stack(phoenix_port=port).latest_trace_url() is None  # no request yet
    finally:
        server.shutdown()
        server.server_close()
