"""The ``meetingtasks`` command: run the local stack, send tasks, look inside."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from meetingtasks.errors import MeetingTasksError

cli = typer.Typer(
    help="meetingtasks: tasks and events of the meeting platform, on Celery and Redis.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


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
) -> None:
    """Start the whole stack here (Redis if none answers, worker, scheduler, Flower)."""
    from meetingtasks.stack import Stack

    stack = Stack(flower_port=flower_port, concurrency=concurrency, out=console.print)
    try:
        stack.start()
        reason = stack.wait()
        console.print(f"\n{reason}: stopping")
    finally:
        stack.stop()
    console.print("stopped")


@cli.command()
def scheduler(
    interval: Annotated[float, typer.Option(help="Seconds between sweeps.")] = 1.0,
) -> None:
    """Run the scheduler loop: priority aging (more scheduler processes may run at once)."""
    import logging

    from meetingtasks.aging import PriorityAging
    from meetingtasks.loops import Periodic
    from meetingtasks.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    aging = Periodic("priority-aging", PriorityAging(get_settings().priority_aging).sweep, interval)
    aging.start()
    console.print(f"scheduler running (priority aging every {interval}s); Ctrl-C stops it")
    try:
        while aging.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        aging.stop()


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
    """Send one task by type and print its id (and its result with --wait)."""
    from meetingtasks.app import app

    payload = _json_object(data)
    result = app.send_task(task_type, kwargs=payload, priority=priority, timeout=timeout)
    console.print(result.id)
    if wait:
        value = result.get(timeout=(timeout or 60) + 30, propagate=False)
        console.print_json(json.dumps({"status": result.state.lower(), "result": _jsonable(value)}))
        if result.state != "SUCCESS":
            raise typer.Exit(1)


def _jsonable(value: Any) -> Any:
    return repr(value) if isinstance(value, BaseException) else value
