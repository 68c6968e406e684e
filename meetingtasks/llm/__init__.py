"""The LLM client: Edge-LLM-Infra's JSON protocol to inference nodes.

    protocol.py      the protocol without I/O: requests, replies, stream assembly, errors
    transport.py     client connections: ZMQ DEALER (tcp://, ipc://) and newline JSON
                     over TCP (tcp+json://, StackFlow's unit manager)
    session.py       one connection's setup → inference → exit exchanges
    health.py        per-node health: failures, skipping, failover order
    client.py        LLMClient: load spread, failover, timeouts, health()

The nodes themselves (the reference node, its backends, the StackFlow bridge) are a
service of their own: ``meetingtasks.node``. No Celery and no Redis here: tasks and the
gateway call ``LLMClient``.
"""

from meetingtasks.llm.client import LLMClient

__all__ = ["LLMClient"]
