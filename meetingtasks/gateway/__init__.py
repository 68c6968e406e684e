"""The client gateway: WebSocket clients submit tasks and follow meetings.

protocol        the wire protocol without I/O: frames in, commands or errors out
auth            signed client tokens (JWT): mint_token, verify -> Principal
session         one client session's limits and ordering, without I/O
sessions_store  sessions in Redis, so any gateway process resumes any session
fanout          one Redis Pub/Sub connection per process for every client's channels
hub             this process's sessions and connections, and where messages go
tasks           client task names, the token's rights, the dispatcher in threads
connection      one client's WebSocket, from handshake to close
http            /healthz, /stats, /metrics, POST /tasks, GET /tasks/{id}
metrics         the gateway's Prometheus metrics
web             the live meeting page and the JavaScript client (files in web/)
server          the ASGI app and ``serve()`` (``meetingtasks gateway``)
"""

from meetingtasks.gateway.auth import Principal, mint_token, verify
from meetingtasks.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "Principal", "mint_token", "verify"]
