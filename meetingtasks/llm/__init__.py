"""The LLM bridge: Edge-LLM-Infra's JSON protocol to inference nodes, and a reference node.

    protocol.py      the protocol without I/O: requests, replies, stream assembly, errors
    transport.py     client connections: ZMQ DEALER (tcp://, ipc://) and newline JSON
                     over TCP (tcp+json://, StackFlow's unit manager)
    session.py       one connection's setup → inference → exit exchanges
    health.py        per-node health: failures, skipping, failover order
    client.py        LLMClient: load spread, failover, timeouts, health()
    backends.py      Backend, the interface models plug in behind; EchoBackend
    llama.py         a real model in the node: SmolLM2 on llama.cpp (the model extra)
    openai_upstream.py  a backend streaming from any OpenAI-compatible server
                     (``meetingtasks ai-node --upstream openai+http://HOST:PORT/v1``)
    pool.py          several backends behind one node, by free slots
    node_core.py     the node's answers without I/O: work units and handlers
    node_servers.py  the node's ZMQ ROUTER and TCP front ends
    node.py          InferenceNode, NodeConfig, run() (``meetingtasks ai-node``)
    stackflow.py     the StackFlow bridge: a backend that alone talks to a unit manager
                     (``meetingtasks ai-node --upstream tcp+json://HOST:10001``)
    stackflow_text.py  text and request lines a unit manager's framing carries intact

No Celery and no Redis here: tasks and the gateway call ``LLMClient``.
"""

from meetingtasks.llm.backends import Backend, EchoBackend, Generation
from meetingtasks.llm.client import LLMClient
from meetingtasks.llm.node import InferenceNode, NodeConfig

__all__ = ["Backend", "EchoBackend", "Generation", "InferenceNode", "LLMClient", "NodeConfig"]
