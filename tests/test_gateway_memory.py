"""Idle connections are cheap: the budget is 10,000 per process at 30 KB each.

A couple of thousand connections are held open against a real gateway process and its
resident memory growth is divided by their number (the benchmark does 10,000).
"""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

from websockets.asyncio.client import connect

from tests.support.gateways import GatewayProcess, token

CONNECTIONS = 2000
BUDGET_KB = 30


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def hold_idle(url: str, pid: int) -> tuple[int, int]:
    """Open the connections (each reads its session frame), then measure."""
    gate = asyncio.Semaphore(64)

    async def one() -> object:
        async with gate:
            connection = await connect(url, open_timeout=60, ping_interval=None)
            await asyncio.wait_for(connection.recv(), 60)
            return connection

    warm = [await one() for _ in range(20)]  # the first connections load code and pools
    await asyncio.sleep(0.5)
    before = rss_bytes(pid)
    connections = await asyncio.gather(*(one() for _ in range(CONNECTIONS)))
    await asyncio.sleep(1)
    after = rss_bytes(pid)
    await asyncio.gather(*(c.close() for c in [*warm, *connections]))  # type: ignore[attr-defined]
    return before, after


def test_an_idle_connection_costs_under_30_kb(redis, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = CONNECTIONS + 200
    assert hard >= needed, f"raise the open files limit (ulimit -n) to {needed}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))  # the gateway too
    gateway = GatewayProcess(tmp_path / "gateway.log")
    try:
        before, after = asyncio.run(hold_idle(gateway.ws_url(token("idler")), gateway.process.pid))
        per_connection_kb = (after - before) / 1024 / CONNECTIONS
        assert per_connection_kb < BUDGET_KB, f"{per_connection_kb:.1f} KB per connection"
        assert gateway.alive()
    finally:
        gateway.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
