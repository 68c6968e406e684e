"""What one gateway process counts about its clients, for /stats and /metrics.

Per process on purpose: connections live in a process, so these numbers are the
process's own; the cluster-wide task numbers come from Redis beside them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GatewayCounters:
    connections: int = 0
    frames_in: int = 0
    frames_out: int = 0
    submitted: int = 0
    #: Error frames sent, by code.
    errors: Counter[str] = field(default_factory=Counter)
    #: Connections closed by the gateway, by reason code (token_expired, too_slow …).
    refusals: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "submitted": self.submitted,
            "errors": dict(self.errors),
            "refusals": dict(self.refusals),
        }
