"""Node health as a client sees it: skipping failed nodes, the failover order, stats."""

from __future__ import annotations

import json

from meetingtasks.llm.health import NodeHealth, failover_order


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def node(clock: Clock, name: str = "a") -> NodeHealth:
    return NodeHealth(name, skip_base=1.0, skip_max=5.0, clock=clock, wall=clock)


def test_failures_skip_a_node_longer_each_time_up_to_the_cap() -> None:
    clock = Clock()
    health = node(clock)
    skips = []
    for _ in range(5):
        health.record_failure(OSError("refused"))
        skips.append(health.skipped_for())
    assert skips == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.now += 5.0
    assert health.skipped_for() == 0.0
    health.record_success()
    assert health.consecutive_failures == 0
    health.record_failure(OSError("again"))
    assert health.skipped_for() == 1.0


def test_to_dict_is_json_and_shows_a_dead_node() -> None:
    clock = Clock()
    health = node(clock)
    assert health.to_dict()["state"] == "unknown"
    health.record_success()
    health.record_failure(TimeoutError("node sent nothing"))
    stats = json.loads(json.dumps(health.to_dict()))
    assert stats["state"] == "down" and stats["skipped_until"] == clock.now + 1.0
    assert stats["last_error"] == "node sent nothing"
    assert (stats["requests"], stats["failures"], stats["consecutive_failures"]) == (2, 1, 1)
    health.record_error(ValueError("bad prompt"))
    assert health.to_dict()["errors"] == 1 and health.to_dict()["state"] == "down"


def test_failover_order_rotates_over_healthy_nodes_then_tries_skipped_ones() -> None:
    clock = Clock()
    nodes = [node(clock, name) for name in "abcd"]
    assert failover_order(nodes, 0) == [0, 1, 2, 3]
    assert failover_order(nodes, 6) == [2, 3, 0, 1]
    nodes[1].record_failure(OSError())
    nodes[1].record_failure(OSError())  # skipped 2 s
    nodes[3].record_failure(OSError())  # skipped 1 s: back sooner, tried first
    assert failover_order(nodes, 1) == [2, 0, 3, 1]
