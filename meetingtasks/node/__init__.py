"""The inference node service (``meetingtasks ai-node``): it answers ``LLMClient``'s
protocol (``meetingtasks.llm.protocol``) from a model behind it.

    core.py          the node's answers without I/O: work units and handlers
    servers.py       the node's ZMQ ROUTER and TCP front ends
    service.py       InferenceNode, NodeConfig, run()
    backends.py      Backend, the interface models plug in behind; EchoBackend
    llama.py         a real model in the node: SmolLM2 on llama.cpp (the model extra)
    openai_upstream.py  a backend streaming from any OpenAI-compatible server
                     (``meetingtasks ai-node --upstream openai+http://HOST:PORT/v1``)
    pool.py          several backends behind one node, by free slots
    stackflow/       the StackFlow bridge: a backend that alone talks to a unit manager
                     (``meetingtasks ai-node --upstream tcp+json://HOST:10001``)
"""

from meetingtasks.node.backends import Backend, EchoBackend, Generation
from meetingtasks.node.service import InferenceNode, NodeConfig

__all__ = ["Backend", "EchoBackend", "Generation", "InferenceNode", "NodeConfig"]
