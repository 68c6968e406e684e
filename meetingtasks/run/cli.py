"""The ``meetingtasks`` command: run the local stack, send tasks, look inside."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from meetingtasks.app import app
from meetingtasks.base.keys import get_keys
from meetingtasks.base.priority import Priority
from meetingtasks.base.settings import REPO_ROOT, get_settings
from meetingtasks.base.status import TaskStatus
from meetingtasks.celery_ext import logs
from meetingtasks.dead_letter_queue import DeadLetterQueue
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.errors import MeetingTasksError
from meetingtasks.gateway.auth import mint_token
from meetingtasks.gateway.server import serve
from meetingtasks.llm.transport import TCP_JSON_SCHEME
from meetingtasks.node.backends import Backend, load_backend
from meetingtasks.node.openai_upstream import OpenAIUpstream, is_openai_upstream
from meetingtasks.node.pool import BackendPool
from meetingtasks.node.service import DEFAULT_BIND, NodeConfig
from meetingtasks.node.service import run as run_node
from meetingtasks.node.stackflow import StackFlowBridge
from meetingtasks.policies.scheduling import SchedulerLoops
from meetingtasks.run.stack import Stack
from meetingtasks.runtime import cluster_stats
from meetingtasks.scheduler import TaskScheduler
from meetingtasks.store import malformed
from meetingtasks.store.memory import check_eviction_policy

cli = typer.Typer(
    help="meetingtasks: tasks and events of the meeting platform, on Celery and Redis.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


dlq_cli = typer.Typer(
    help="The dead-letter queue: tasks that failed for good.", no_args_is_help=True
)
cli.add_typer(dlq_cli, name="dlq")
malformed_cli = typer.Typer(
    help="Messages set aside because they can never become a task, with the reason.",
    no_args_is_help=True,
)
cli.add_typer(malformed_cli, name="malformed")


def main() -> None:
    """Entry point: our errors become one clear line and exit code 2, not a traceback."""
    try:
        cli()
    except MeetingTasksError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from exc


@cli.command()
def run(
    flower_port: Annotated[int, typer.Option(help="Port of the Flower dashboard.")] = 5555,
    concurrency: Annotated[int, typer.Option(help="Worker processes of the local worker.")] = 2,
    trace: Annotated[
        bool,
        typer.Option(
            help="Start Arize Phoenix and send every part's traces to it "
            "(scripts/run --trace installs it)."
        ),
    ] = False,
) -> None:
    """Start the whole stack here (Redis if none answers, worker, AI node, gateway, Flower)."""
    stack = Stack(flower_port=flower_port, concurrency=concurrency, trace=trace, out=console.print)
    try:
        stack.start()
        reason = stack.wait()
        console.print(f"\n{reason}: stopping")
    finally:
        stack.stop()
    console.print("stopped")


@cli.command("ai-node")
def ai_node(
    bind: Annotated[str, typer.Option(help="ZMQ endpoint to serve; '' for none.")] = DEFAULT_BIND,
    tcp_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve newline JSON (a StackFlow unit manager's wire) here; 0: any."
        ),
    ] = None,
    tcp_host: Annotated[str, typer.Option(help="Address of the newline JSON server.")] = (
        "127.0.0.1"
    ),
    unit: Annotated[str, typer.Option(help="The unit name setups ask for.")] = "llm",
    token_delay: Annotated[
        float, typer.Option(help="Seconds between two tokens of the echo backend.")
    ] = 0.0,
    max_work_ids: Annotated[int, typer.Option(help="Work units held at once.")] = (
        NodeConfig.max_work_ids
    ),
    workers: Annotated[int, typer.Option(help="Requests answered at once (threads).")] = (
        NodeConfig.workers
    ),
    backend: Annotated[
        str | None,
        typer.Option(
            help="echo (a test double, the default), llama (SmolLM2 on llama.cpp: the model "
            "extra) or package.module:factory of your own; with --upstream, one more member "
            "of the pool."
        ),
    ] = None,
    slots: Annotated[
        int, typer.Option(help="llama: model contexts answering at once (the rest queue).")
    ] = 1,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="Serve from an upstream instead of a backend: openai+http://HOST:PORT/v1 (any "
            "OpenAI-compatible server: vLLM, llama-server, Ollama, llama_cpp.server) or "
            "tcp+json://HOST[:PORT] (a StackFlow unit manager, of which this node is then the "
            "only client). Repeat it for several: each reply goes to the one with the most "
            "free slots."
        ),
    ] = None,
    upstream_units: Annotated[
        int, typer.Option(help="Work units held on the StackFlow peer (its node has 3).")
    ] = 3,
    upstream_timeout: Annotated[
        float, typer.Option(help="Seconds of silence accepted from an upstream.")
    ] = 20.0,
    upstream_recycle_after: Annotated[
        int,
        typer.Option(
            help="Requests on one StackFlow connection before the next opens (the unit "
            "manager dies near 28 reads of one)."
        ),
    ] = 20,
    upstream_streams: Annotated[
        int,
        typer.Option(help="Requests in flight at once to each OpenAI upstream (its slots)."),
    ] = 4,
    upstream_model: Annotated[
        str | None,
        typer.Option(help="The model name to ask OpenAI upstreams for (default: the task's)."),
    ] = None,
) -> None:
    """Run the reference inference node (the Edge-LLM-Infra protocol over ZMQ and TCP).

    It prints "ready" and its client addresses once serving; SIGTERM or Ctrl-C stops it.
    API keys for OpenAI upstreams come from MEETINGTASKS_UPSTREAM_API_KEY or OPENAI_API_KEY.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logs.apply()
    by_backend: dict[str, dict[str, Any]] = {
        "echo": {"delay": token_delay},
        "llama": {"slots": slots},
    }
    served: list[Backend] = []
    for url in upstream or []:
        if is_openai_upstream(url):
            served.append(
                OpenAIUpstream(
                    url, model=upstream_model, streams=upstream_streams,
                    read_timeout=upstream_timeout, queue_timeout=upstream_timeout * 0.75,
                )
            )  # fmt: skip
        elif url.startswith(f"{TCP_JSON_SCHEME}://"):
            served.append(
                StackFlowBridge(
                    url, unit=unit, units=upstream_units, read_timeout=upstream_timeout,
                    queue_timeout=upstream_timeout * 0.75, recycle_after=upstream_recycle_after,
                )
            )  # fmt: skip
        else:
            raise typer.BadParameter(
                f"--upstream {url!r}: give openai+http://HOST:PORT/v1 (an OpenAI-compatible "
                "server) or tcp+json://HOST[:PORT] (a StackFlow unit manager)"
            )
    if backend is not None or not served:
        spec = backend or "echo"
        served.insert(0, load_backend(spec, **by_backend.get(spec, {})))
    run_node(
        bind=bind or None, tcp_port=tcp_port, tcp_host=tcp_host, unit=unit,
        backend=served[0] if len(served) == 1 else BackendPool(served),
        max_work_ids=max_work_ids, workers=workers,
    )  # fmt: skip


@cli.command()
def scheduler(
    interval: Annotated[
        float | None, typer.Option(help="Seconds between sweeps for due tasks.")
    ] = None,
) -> None:
    """Run the scheduler loops apart: due delays and retries, priority aging, recovery of
    dead workers' tasks, the timeout monitor.

    Every worker runs them already (MEETINGTASKS_EMBEDDED_SCHEDULER); this is for
    deployments that turn that off. Several may run at once (each step is atomic in
    Redis); SIGTERM or Ctrl-C stops it.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logs.apply()
    check_eviction_policy()
    service = SchedulerLoops.create(app.backend, interval)
    service.start()
    console.print("scheduler running; Ctrl-C stops it")
    serve_until_stopped(lambda: service.running)
    service.stop()
    console.print("scheduler stopped")


def serve_until_stopped(alive: Callable[[], bool]) -> None:
    """Block until SIGTERM, Ctrl-C, or ``alive()`` turns false."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while alive() and not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter('must be a JSON object, e.g. \'{"meeting_id": "m1"}\'')
    return value


@cli.command()
def dispatch(
    task_type: Annotated[str, typer.Argument(help="Task type, e.g. system.echo")],
    data: Annotated[str, typer.Option(help="Payload: a JSON object of keyword arguments.")] = "{}",
    priority: Annotated[str | None, typer.Option(help="critical|high|normal|low")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds the task may run.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result and print it.")] = False,
) -> None:
    """Send one task by type and print its id (and, with --wait, how it ended: our status,
    its result or error); exits 1 unless it completed."""
    dispatcher = TaskDispatcher()
    request = TaskRequest(type=task_type, payload=_json_object(data), priority=priority,
                          timeout=timeout)  # fmt: skip
    task_id = dispatcher.dispatch(request).task_id
    console.print(task_id)
    if wait and task_id is not None:
        ended = dispatcher.wait(task_id, timeout=(timeout or 60) + 30)
        outcome = {"status": ended.status.value, "result": ended.result, "error": ended.error}
        console.print_json(json.dumps(outcome, default=repr))
        if ended.status is not TaskStatus.COMPLETED:
            raise typer.Exit(1)


@cli.command()
def cancel(task_id: Annotated[str, typer.Argument(help="Id of the task to cancel.")]) -> None:
    """Cancel a delayed, queued or running task (it holds across restarts)."""
    if TaskScheduler().cancel(task_id):
        console.print(f"cancelled {task_id}")
    else:
        errors.print(f"{task_id} had already finished: nothing to cancel")
        raise typer.Exit(1)


@dlq_cli.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """List dead letters with their error."""
    from rich.table import Table

    queue = DeadLetterQueue()
    letters = queue.list(limit)
    if as_json:
        print(json.dumps([letter.model_dump() for letter in letters], indent=2))
        return
    table = Table(title=f"dead letters: {queue.count()} (oldest {len(letters)} shown)")
    for column in ("task id", "type", "queue", "priority", "attempts", "failed at", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            letter.task_id,
            letter.type,
            letter.queue or "",
            "" if letter.priority is None else Priority.parse(letter.priority).name.lower(),
            str(letter.attempts),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at)),
            f"{letter.error_type}: {letter.error}"[:80],
        )
    console.print(table)


@dlq_cli.command("requeue")
def dlq_requeue(
    n: Annotated[int | None, typer.Option("-n", min=1, help="The n oldest.")] = None,
    task_ids: Annotated[list[str] | None, typer.Option("--id", help="These task ids.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
) -> None:
    """Send dead letters again, with their type, payload, priority and route."""
    if sum((n is not None, bool(task_ids), every)) != 1:
        raise typer.BadParameter("give exactly one of -n N, --id ID (repeatable) or --all")
    requeued = DeadLetterQueue().requeue(n=n, ids=task_ids)
    console.print(f"requeued {len(requeued)}")
    for task_id in requeued:
        console.print(f"  {task_id}")


@dlq_cli.command("purge")
def dlq_purge(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Drop every dead letter."""
    queue = DeadLetterQueue()
    if not yes and not typer.confirm(f"drop all {queue.count()} dead letters?"):
        raise typer.Abort()
    console.print(f"purged {queue.purge()}")


@dlq_cli.command("count")
def dlq_count() -> None:
    """How many dead letters there are."""
    print(DeadLetterQueue().count())


@malformed_cli.command("list")
def malformed_list(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """List what was set aside: when, from where, the task id, why."""
    from rich.table import Table

    entries = malformed.entries(get_keys(), limit)
    if as_json:
        print(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    table = Table(title=f"malformed: {malformed.count(get_keys())} (newest {len(entries)} shown)")
    for column in ("set aside at", "from", "task id", "reason", "message"):
        table.add_column(column)
    for entry in entries:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.at)) if entry.at else ""
        raw = entry.raw[:60].decode("utf-8", "replace")
        table.add_row(at, entry.source or "", entry.task_id or "", entry.reason, raw)
    console.print(table)


@malformed_cli.command("purge")
def malformed_purge(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Drop every entry."""
    if not yes and not typer.confirm(f"drop all {malformed.count(get_keys())} entries?"):
        raise typer.Abort()
    console.print(f"purged {malformed.purge(get_keys())}")


@cli.command()
def stats(
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON for scripts (one line per refresh with --watch).")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between refreshes with --watch.")
    ] = 2.0,
) -> None:
    """Queue depths by priority, delayed, processing, dead letters, workers, scheduler.

    The cluster-wide numbers, the same from any machine.
    """
    from rich.live import Live

    if not watch:
        snapshot = cluster_stats()
        if as_json:
            print(json.dumps(snapshot, indent=2))
        else:
            console.print(_stats_view(snapshot))
        return
    try:
        if as_json:
            while True:
                print(json.dumps(cluster_stats()), flush=True)
                time.sleep(interval)
        else:
            with Live(_stats_view(cluster_stats()), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(_stats_view(cluster_stats()), refresh=True)
    except KeyboardInterrupt:
        pass


def _stats_view(stats: dict[str, Any]) -> Any:
    """The stats as two tables: queues by priority, then the cluster's other numbers."""
    from rich.console import Group
    from rich.table import Table

    levels = Priority.names()
    queues = Table(title=f"queues of {stats['namespace']!r} at {time.strftime('%H:%M:%S')}")
    queues.add_column("queue")
    for column in (*levels, "total"):
        queues.add_column(column, justify="right")
    for name, depths in stats["queues"].items():
        queues.add_row(name, *(str(depths[column]) for column in (*levels, "total")))

    cluster = Table(show_header=False)
    cluster.add_column(style="bold")
    cluster.add_column()
    workers = stats["workers"]
    rows: list[tuple[str, Any]] = [
        ("delayed", stats["delayed"]),
        ("processing", stats["processing"]),
        ("dead letters", stats["dlq"]),
        ("malformed", stats["malformed"]),
        *(
            (f"[red]unconsumed[/red] {name!r}", f"{count} (nobody reads it: see docs/wire.md)")
            for name, count in stats["unconsumed"].items()
        ),
        ("workers online", " ".join([str(workers["online"]), *workers["ids"][:5]])),
        ("scheduler", "  ".join(f"{k} {v}" for k, v in sorted(stats["scheduler"].items()))),
    ]
    rows += [(f"dispatcher {key}", value) for key, value in stats["dispatcher"].items()]
    memory = stats["memory"]
    limit = f" of {_megabytes(memory['max_bytes'])}" if memory["max_bytes"] else " (no maxmemory)"
    rows += [
        ("redis memory", f"{_megabytes(memory['used_bytes'])}{limit}, {memory['policy']}"),
        ("bytes per task", f"{memory['bytes_per_task']} (its record, result included)"),
        ("keys", "  ".join(f"{name} {f['keys']}" for name, f in memory["families"].items())),
    ]
    for label, value in rows:
        text = value if isinstance(value, str) else json.dumps(value)
        cluster.add_row(label, text or "-")
    return Group(queues, cluster)


def _megabytes(count: int) -> str:
    return f"{count / 1_048_576:,.1f} MB"


@cli.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark (bench/, as scripts/bench does: --quick, --only …); --help for more.

    It runs in a fresh process: this one has already read its Redis settings, and the
    benchmark uses only a private redis-server of its own.
    """
    import subprocess
    import sys

    if not (REPO_ROOT / "bench" / "run.py").exists():
        errors.print(f"[red]error:[/red] no bench/ beside {REPO_ROOT / 'meetingtasks'}: "
                     "the benchmark runs from a source checkout")  # fmt: skip
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], cwd=REPO_ROOT))


@cli.command()
def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Processes sharing the port (SO_REUSEPORT)."),
    ] = None,
    reuse_port: Annotated[
        bool, typer.Option(help="Share the port with other gateways started with it too.")
    ] = False,
) -> None:
    """Run the client gateway: WebSocket at ws://HOST:PORT/ws, and its HTTP endpoints.

    Limits and the token secret come from MEETINGTASKS_GATEWAY_* and MEETINGTASKS_SECRET.
    Start several against the same Redis: any of them resumes any client session.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logs.apply()
    workers = workers or get_settings().gateway_workers
    serve(host, port, workers=workers, reuse_port=reuse_port)


@cli.command()
def token(
    user: Annotated[str, typer.Option(help="The user id the token names.")],
    meeting: Annotated[
        list[str] | None, typer.Option(help="A meeting the token grants (repeatable).")
    ] = None,
    ttl: Annotated[float, typer.Option(min=1, help="Seconds the token is valid.")] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="JSON with token and expiry.")] = False,
) -> None:
    """Mint a client token for the gateway (signed with MEETINGTASKS_SECRET)."""
    now = time.time()
    value = mint_token(user, meeting or [], ttl, now=now)
    if as_json:
        print(json.dumps({"token": value, "user": user, "meetings": meeting or [],
                          "expires_at": int(now + ttl)}))  # fmt: skip
    else:
        print(value)
